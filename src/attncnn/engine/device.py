"""Which device a command computes on, and what is on by default there.

One rule for every command (train, eval, predict, explain, bench, sweep):

    device = resolve_device(args.device)          # "auto", "cpu", "cuda", "cuda:1", ...

and, for training, the `auto` values of run.amp, run.channels_last and run.compile.
"""
from __future__ import annotations

import torch

from attncnn.engine.config import AUTO
from attncnn.errors import AttncnnError


def resolve_device(name: str, what: str = "device") -> torch.device:
    """`auto` -> cuda where torch sees a GPU, else cpu; any other name (cpu, cuda, cuda:N,
    mps) as torch names it, checked: an unknown name, a device type other than those (meta,
    xpu, ...), or CUDA or MPS where torch has none, is one AttncnnError line. `what` names
    the setting in that line (run.device, --device)."""
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise AttncnnError(f"{what}={name}: unknown device; use auto, cpu, cuda or "
                           f"cuda:N") from None
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AttncnnError(f"{what}={name} but this torch ({torch.__version__}) sees no MPS "
                           f"device; use {what}=cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AttncnnError(f"{what}={name} but this torch ({torch.__version__}) sees no "
                               f"CUDA GPU; use {what}=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AttncnnError(f"{what}={name} but torch sees {torch.cuda.device_count()} "
                               f"CUDA GPU(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True where the CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16),
    so that bf16 autocast speeds convolutions up; elsewhere oneDNN emulates bf16 and it
    would only cost accuracy. Read from /proc/cpuinfo (Linux); False where that is absent."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def resolve_flag(value, device: torch.device) -> bool:
    """`auto` -> on for CUDA only; true/false as given."""
    return device.type == "cuda" if value == AUTO else bool(value)


def resolve_amp(value, device: torch.device) -> bool:
    """`auto` -> bf16 autocast on CUDA and on CPUs with bf16 in hardware (measured on this
    project's AVX512-BF16 CPU: a ResNet-20 step 1.4x faster, docs/bench.md)."""
    if value != AUTO:
        return bool(value)
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def resolve_channels_last(value, device: torch.device) -> bool:
    """`auto` -> on: NHWC is faster for these convnets on CUDA (tensor cores) and on the CPU
    (oneDNN; a ResNet-20 step 1.4x faster on this project's CPU, docs/bench.md)."""
    return device.type in ("cuda", "cpu") if value == AUTO else bool(value)

"""Model cost and speed: parameters, MACs, training and inference throughput, peak memory.

    report = bench_models(["resnet110_cifar", "attn_resnet110_cifar"], BenchSettings(batch_size=32))
    print(format_table(report))

What one measurement is (see docs/bench.md for the JSON fields):
- training step = `attncnn.engine.step.make_train_step`, the step `attncnn train` runs:
  forward + cross-entropy + backward + the engine's SGD step (`build_optimizer` with
  `BENCH_OPTIM`: Nesterov momentum 0.9, weight decay 5e-4; fused on CUDA) on one fixed batch
  already on the device, in the chosen precision and memory format. The data path is left
  out on purpose: the step is what the model costs.
- inference step = `make_infer_step`: forward in eval mode under `torch.inference_mode`.
- each model first runs `warmup` untimed steps (cudnn autotuning, torch.compile, allocator),
  then `windows` timed windows of `steps` steps, interleaved over the models (A B A B ...) so
  that load changes on a shared machine hit all alike. A window ends with
  `torch.cuda.synchronize()` on GPU and nothing inside it waits for the device (no `.item()`),
  so the figure is the device's throughput. The median window is the headline; min and max
  show the spread.
- peak memory: the model's own weights (what its build added) plus the peak during its
  warm-up steps (train, then inference) above the level just before them, so its weights,
  gradients, optimizer state and activations count and other models' do not. On CUDA from `torch.cuda.max_memory_allocated`
  (tensors only; the caching allocator's reserve is excluded). On CPU from the process's
  peak resident set (VmHWM, reset through /proc/self/clear_refs where Linux allows; else the
  lifetime peak `ru_maxrss`, so only growth above every earlier peak shows): it counts all
  the process touched, allocator slack included, and is a coarse figure.
"""
from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from attncnn.engine.config import OptimConfig
from attncnn.engine.device import resolve_device, synchronize
from attncnn.engine.environment import environment, utc_now
from attncnn.engine.optim import build_loss, build_optimizer
from attncnn.engine.step import autocast_dtype, make_infer_step, make_train_step
from attncnn.errors import AttncnnError
from attncnn.models import count_macs, count_params, create_model, get_spec

SCHEMA = "attncnn.bench/1"
# the optimiser of the timed training step (docs/bench.md): the lr does not change the cost
BENCH_OPTIM = OptimConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


@dataclass
class BenchSettings:
    device: str = "cpu"
    batch_size: int = 32
    image_size: int | None = None     # None: each model's own input size (32 CIFAR, 224 ImageNet)
    amp: bool = False                 # bfloat16 autocast (CUDA and CPU)
    channels_last: bool = False
    compile: bool = False             # torch.compile the model
    compile_mode: str | None = None   # e.g. "reduce-overhead" (CUDA graphs), "max-autotune"
    warmup: int = 3
    steps: int = 10                   # steps per timed window
    windows: int = 3
    train: bool = True
    infer: bool = True
    num_classes: int | None = None    # None: the model's default
    seed: int = 0


class PeakMemory:
    """Memory of a phase: `with PeakMemory(device) as m: ...`, then `m.bytes` is the peak
    above the level on entry and `m.grown` the level on exit minus the level on entry."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: int | None = None
        self.grown: int | None = None
        self.method = "cuda.max_memory_allocated" if device.type == "cuda" else "rss_hwm_delta"

    def _level(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _rss_bytes() if self.method == "rss_hwm_delta" else _maxrss_bytes()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_rss_peak():
            self.method = "ru_maxrss_delta"
        self.start = self._level()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "rss_hwm_delta":
            peak = _status_kb("VmHWM") * 1024
        else:
            peak = _maxrss_bytes()
        self.bytes = max(0, int(peak) - self.start)
        self.grown = max(0, self._level() - self.start)
        return False


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def _rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc malloc_trim), so that a phase's
    allocations show in RSS instead of reusing pages still resident from earlier work."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


def _summary(step_times: list[float], batch_size: int) -> dict:
    ms = [1e3 * t for t in step_times]
    ips = [batch_size / t for t in step_times]
    return {
        "step_time_ms": {"median": statistics.median(ms), "min": min(ms), "max": max(ms)},
        "images_per_s": {"median": statistics.median(ips), "min": min(ips), "max": max(ips)},
        "windows_ms": ms,
    }


def build_model(name: str, settings: BenchSettings, device: torch.device) -> nn.Module:
    overrides = {} if settings.num_classes is None else {"num_classes": settings.num_classes}
    model = create_model(name, **overrides).to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def input_size(name: str, settings: BenchSettings) -> tuple[int, int, int]:
    c, h, w = get_spec(name).input_size
    if settings.image_size:
        h = w = settings.image_size
    return c, h, w


class _Subject:
    """One model under test: its input batch, step functions and timings so far."""

    def __init__(self, name: str, settings: BenchSettings, device: torch.device):
        self.name, self.device = name, device
        torch.manual_seed(settings.seed)
        self.size = input_size(name, settings)
        with PeakMemory(device) as mem:
            self.model = build_model(name, settings, device)
        self.own_bytes = mem.grown  # its weights: counted in its own phases only
        num_classes = self.model.model_args.get("num_classes", 10)
        self.x = torch.randn(settings.batch_size, *self.size, device=device)
        if settings.channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, num_classes, (settings.batch_size,), device=device)
        self.run = (torch.compile(self.model, mode=settings.compile_mode) if settings.compile
                    else self.model)
        self.times: dict[str, list[float]] = {"train": [], "infer": []}
        self.peak: dict[str, tuple[int | None, str]] = {}

    def step_fn(self, phase: str, amp: bool) -> Callable:
        """step(x, y) of `phase`: the engine's training step or its inference step."""
        if phase == "train":
            self.model.train()
            return make_train_step(self.run, build_optimizer(self.model, BENCH_OPTIM, self.device),
                                   build_loss(BENCH_OPTIM), self.device, autocast_dtype(amp))
        self.model.eval()
        infer = make_infer_step(self.run, self.device, autocast_dtype(amp))
        return lambda x, y: infer(x)

    def warm_up(self, phase: str, step: Callable, warmup: int) -> None:
        """Untimed steps (at least one), inside the memory measurement of the phase: its peak
        above the level before, plus the model's own weights (already resident)."""
        with PeakMemory(self.device) as mem:
            for _ in range(max(1, warmup)):
                step(self.x, self.y)
            synchronize(self.device)
        self.peak[phase] = (mem.bytes + self.own_bytes, mem.method)

    def time_window(self, phase: str, step: Callable, steps: int) -> None:
        """Time `steps` steps; keep seconds per step under `phase`."""
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            step(self.x, self.y)  # no .item(), no host sync inside the window
        synchronize(self.device)
        self.times[phase].append((time.perf_counter() - start) / steps)


def bench_models(names: list[str], settings: BenchSettings, baseline: str | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Bench every model in `names`; step-time ratios are against `baseline` (default: first).

    Timed windows are interleaved round-robin over the models (A B C A B C ...), so a load
    change on a shared machine hits every model alike instead of whichever ran last.
    """
    if not names:
        raise AttncnnError("bench: name at least one model (see `attncnn models`)")
    for name in names:
        get_spec(name)  # fail on a typo before minutes of timing
    baseline = baseline or names[0]
    if baseline not in names:
        names = [baseline, *names]
    device = resolve_device(settings.device, what="--device")
    if device.type not in ("cpu", "cuda"):
        raise AttncnnError(f"--device={settings.device}: bench runs on cpu or cuda")
    env = environment(device)  # before timing: the commit that ran, not one made meanwhile
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # autotuned in the warm-up, as training would
    subjects = [_Subject(name, settings, device) for name in names]
    phases = [p for p in ("train", "infer") if getattr(settings, p)]
    for phase in phases:
        steps = {}
        for s in subjects:
            if progress:
                progress(f"{phase} warm-up: {s.name}")
            steps[s.name] = s.step_fn(phase, settings.amp)
            s.warm_up(phase, steps[s.name], settings.warmup)
        for w in range(settings.windows):
            if progress:
                progress(f"{phase} window {w + 1}/{settings.windows}")
            for s in subjects:
                s.time_window(phase, steps[s.name], settings.steps)
    rows = []
    for s in subjects:
        row = {"name": s.name, "params": count_params(s.model),
               "macs": count_macs(s.model, s.size), "input_size": list(s.size)}
        for phase in phases:
            mem, method = s.peak[phase]
            row[phase] = {**_summary(s.times[phase], settings.batch_size),
                          "peak_mem_bytes": mem, "mem_method": method}
        rows.append(row)
    del subjects
    if device.type == "cuda":
        torch.cuda.empty_cache()
    base = next(r for r in rows if r["name"] == baseline)
    for row in rows:
        for phase in phases:
            # window k of every model ran in the same round: compare within rounds, then
            # take the median, so a slow round does not tilt the ratio
            pairs = [a / b for a, b in zip(row[phase]["windows_ms"], base[phase]["windows_ms"])]
            row[f"{phase}_step_ratio"] = statistics.median(pairs)
        row["macs_ratio"] = row["macs"] / base["macs"]
        row["params_ratio"] = row["params"] / base["params"]
    return {
        "schema": SCHEMA,
        "created_at": utc_now(),
        "settings": asdict(settings),
        "baseline": baseline,
        "env": env,
        "models": rows,
    }


def format_table(report: dict) -> str:
    """The report as a fixed-width table, one line per model."""
    s = report["settings"]
    lines = [
        f"device {report['env']['device_name']} | batch {s['batch_size']} | "
        f"amp {'bf16' if s['amp'] else 'off'} | channels_last {s['channels_last']} | "
        f"compile {s['compile']} | {s['windows']} windows x {s['steps']} steps after "
        f"{s['warmup']} warm-up | ratios vs {report['baseline']}",
        f"{'model':26s} {'size':>5s} {'params':>8s} {'MACs':>8s} {'train img/s':>19s} "
        f"{'ratio':>5s} {'infer img/s':>19s} {'ratio':>5s} {'train mem':>9s}",
    ]
    for r in report["models"]:
        lines.append(
            f"{r['name']:26s} {r['input_size'][1]:5d} {r['params'] / 1e6:7.3f}M "
            f"{r['macs'] / 1e9:7.3f}G {_speed(r.get('train'))} {_ratio(r.get('train_step_ratio'))} "
            f"{_speed(r.get('infer'))} {_ratio(r.get('infer_step_ratio'))} "
            f"{_mem(r.get('train'))}"
        )
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The report as a Markdown table (for docs), one row per model."""
    lines = ["| model | px | params | MACs | train img/s (median [min-max]) | train step ratio "
             "| infer img/s | infer step ratio | train peak mem |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["models"]:
        cells = [f"`{r['name']}`", str(r["input_size"][1]), f"{r['params'] / 1e6:.3f}M",
                 f"{r['macs'] / 1e9:.3f}G"]
        for phase in ("train", "infer"):
            if phase in r:
                ips = r[phase]["images_per_s"]
                cells += [f"{ips['median']:.3g} [{ips['min']:.3g}-{ips['max']:.3g}]",
                          f"{r[f'{phase}_step_ratio']:.2f}"]
            else:
                cells += ["-", "-"]
        mem = r.get("train", {}).get("peak_mem_bytes")
        cells.append("-" if mem is None else f"{mem / 2**20:.0f} MiB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _speed(phase: dict | None) -> str:
    if not phase:
        return f"{'-':>19s}"
    ips = phase["images_per_s"]
    return f"{ips['median']:.4g} [{ips['min']:.3g}-{ips['max']:.3g}]".rjust(19)


def _ratio(value: float | None) -> str:
    return f"{value:5.2f}" if value is not None else f"{'-':>5s}"


def _mem(phase: dict | None) -> str:
    if not phase or phase.get("peak_mem_bytes") is None:
        return f"{'-':>9s}"
    return f"{phase['peak_mem_bytes'] / 2**20:7.0f}MB"

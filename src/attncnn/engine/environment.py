"""Provenance of a run or a measurement: software versions, device, threads, world size,
git commit, host."""
from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from attncnn.engine.device import cpu_has_native_bf16


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding `path` (default: this package). Outside a git
    checkout (an installed wheel, a copy of the tree on another machine): the commit named
    by $ATTNCNN_GIT_COMMIT (dirty if $ATTNCNN_GIT_DIRTY is 1), else (None, None)."""
    path = Path(path or Path(__file__).resolve().parent)

    def git(*args):
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        stamped = os.environ.get("ATTNCNN_GIT_COMMIT", "").strip()
        if stamped:
            return stamped, os.environ.get("ATTNCNN_GIT_DIRTY") == "1"
        return None, None
    return commit, dirty


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:  # Linux gives the marketing name here
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), {torch.get_num_threads()} torch threads"


def environment(device: torch.device | str, world_size: int = 1) -> dict:
    """Where figures were computed, the one record every command writes (results.json of
    train and eval, bench and explain reports).

    device: the torch device the work ran on, as torch names it ("cpu", "cuda", "cuda:1");
    pass the resolved device (`attncnn.engine.device.resolve_device`), never "auto".
    world_size: processes of a distributed run (1 otherwise).
    """
    device = torch.device(device)
    commit, dirty = git_state()
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "world_size": world_size,
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        # the host CPU computes bf16 in hardware: where `run.amp: auto` chose bf16 on the
        # CPU, and why two machines' minutes differ (docs/cpu_cifar10.md)
        "cpu_bf16": cpu_has_native_bf16(),
    }

"""`python tests/reliability_child.py train ...`: the attncnn CLI with test-only faults.

The reliability tests run training in a subprocess (so they can SIGKILL it) or under
torchrun. This script registers the toy data source (tests/engine_toy.py), installs the
faults that the JSON in $RELIABILITY_FAULTS asks for, by monkeypatching, and runs the CLI.
Product code carries no test hooks.

Faults (all optional keys of the JSON object):
    step_log: PATH           append "<global step>\n" when a step starts (flushed, so it
                             survives a SIGKILL: the kernel keeps written data)
    die_in_save: N           SIGKILL this process in the middle of the N-th checkpoint
                             write (1-based), after half the bytes reached the temp file
    raise_at: {rank, step}   rank `rank` raises RuntimeError when global step `step` starts
    hang_at: {rank, step}    rank `rank` sleeps for an hour when global step `step` starts
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_toy  # noqa: E402,F401  (registers the "engine_toy" data source)
import attncnn.engine.checkpoint as ckpt  # noqa: E402
import attncnn.engine.loop as loop_module  # noqa: E402
from attncnn.cli import main  # noqa: E402


def install(faults: dict) -> None:
    rank = int(os.environ.get("RANK", "0"))
    real_lr_at = loop_module.lr_at
    log = open(faults["step_log"], "a", buffering=1) if "step_log" in faults else None
    raise_at, hang_at = faults.get("raise_at"), faults.get("hang_at")

    def lr_at(step, *args):
        if log is not None:
            log.write(f"{step}\n")
            log.flush()
        if raise_at and rank == raise_at["rank"] and step == raise_at["step"]:
            raise RuntimeError(f"injected fault on rank {rank} at global step {step}")
        if hang_at and rank == hang_at["rank"] and step == hang_at["step"]:
            time.sleep(3600)
        return real_lr_at(step, *args)

    loop_module.lr_at = lr_at

    writes = {"n": 0}
    die_at = faults.get("die_in_save")
    if die_at is None:
        return
    real_save = ckpt.torch.save

    def save(obj, f, *args, **kwargs):
        """torch.save that is SIGKILLed half-way through its bytes."""
        writes["n"] += 1
        if writes["n"] != die_at:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    ckpt.torch = _TorchWithSave(ckpt.torch, save)


class _TorchWithSave:
    """The torch module as checkpoint.py sees it, with `save` replaced."""

    def __init__(self, torch, save):
        self._torch, self.save = torch, save

    def __getattr__(self, name):
        return getattr(self._torch, name)


if __name__ == "__main__":
    install(json.loads(os.environ.get("RELIABILITY_FAULTS", "{}")))
    sys.exit(main(sys.argv[1:]))

"""Checkpoints: atomic writes, exact resume, safe loading.

A checkpoint is a dict of tensors and plain Python values only, so it always loads with
`torch.load(weights_only=True)` (no pickled code runs). It holds everything a run needs to
continue exactly where it stopped: model and optimiser state, the position (epoch, step
within the epoch: the data order is a function of (seed, epoch, step)), the partial train
metrics of the epoch, and every random generator (python, numpy, torch CPU and CUDA).

Files in a run directory:
    last.pt       the newest checkpoint (end of an epoch, every N steps, or at a stop)
    last.prev.pt  the one before it: the fallback if last.pt is damaged
    last.bad.pt   a damaged last.pt that a resume moved aside (kept for inspection)
    best.pt       the checkpoint of the best evaluated epoch (information only)
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from attncnn.errors import AttncnnError, first_line
from attncnn.files import atomic_target

FORMAT = "attncnn.checkpoint/1"
LAST, PREVIOUS, BEST = "last.pt", "last.prev.pt", "best.pt"
DAMAGED = "last.bad.pt"  # an unreadable last.pt, moved aside by a resume


def atomic_save(obj, path: str | Path, keep_previous: str | Path | None = None) -> None:
    """torch.save to a temp file in the same directory, fsync, then os.replace: a reader
    (or a crash) sees either the old file or the complete new one, never half of one.

    keep_previous: rename the old `path` to this name, only once the new file is complete,
    so a crash or a full disk during the write leaves the old `path` in place.
    A failed write (disk full, ...) is an AttncnnError that says the old file is intact.
    """
    path = Path(path)
    try:
        for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a killed process
            stale.unlink(missing_ok=True)
        with atomic_target(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            if keep_previous is not None and path.exists():
                os.replace(path, keep_previous)
    except OSError as err:
        kept = f"{path} is unchanged" if path.exists() else \
            (f"{keep_previous} holds the previous one" if keep_previous else "no older file")
        raise AttncnnError(f"cannot write checkpoint {path}: {err.strerror or err} ({kept}); "
                           f"free space or fix the directory, then continue with --resume "
                           f"{path.parent}") from None
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_last(state: dict, run_dir: str | Path) -> Path:
    """Write `state` as last.pt, keeping the previous last.pt as last.prev.pt."""
    run_dir = Path(run_dir)
    atomic_save(state, run_dir / LAST, keep_previous=run_dir / PREVIOUS)
    return run_dir / LAST


def save_best(state: dict, run_dir: str | Path) -> Path:
    path = Path(run_dir) / BEST
    atomic_save(state, path)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint file, loaded safely (weights_only=True), or a one-line AttncnnError."""
    path = Path(path)
    if path.is_file():
        _check_crc(path)
    state = load_state_safely(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AttncnnError(f"{path} is not an attncnn training checkpoint")
    return state


def load_state_safely(path: str | Path, map_location: torch.device | str = "cpu",
                      allow: Iterable[type] = ()):
    """`torch.load` a training checkpoint without ever running code from it.

    weights_only=True lets the unpickler build only tensors and plain containers (plus the
    types in `allow`); a pickle that would call anything else is refused with one
    AttncnnError line instead of being executed.
    """
    path = Path(path)
    if not path.is_file():
        raise AttncnnError(f"checkpoint {path} not found")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; keep its one line that names the culprit
        why = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|$)", str(err), re.M)
        raise AttncnnError(f"{path}: refused to load: it holds objects other than tensors and "
                           f"plain containers ({why.group(1) if why else first_line(err)})") from None
    except Exception as err:  # truncated zip, not a checkpoint at all, ...
        raise AttncnnError(f"{path} is not a readable PyTorch checkpoint "
                           f"({type(err).__name__}: {first_line(err)})") from None


def _check_crc(path: Path) -> None:
    """torch.load does not check the zip's CRC-32s, so a flipped bit would load silently:
    read every record once (about as fast as the disk) and compare."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except OSError as err:
        raise AttncnnError(f"cannot read {path}: {err.strerror or err}") from None
    except Exception as err:  # zipfile raises many types for damaged headers
        raise AttncnnError(f"{path} is truncated, damaged or not a checkpoint "
                           f"({first_line(err)})") from None
    if bad is not None:
        raise AttncnnError(f"{path} is damaged: record {bad} fails its CRC check")


def find_resume_checkpoint(run_dir: str | Path, notice=None) -> dict:
    """The newest loadable checkpoint of `run_dir`: last.pt, else last.prev.pt.

    notice(text): told, in one line, when last.pt is skipped: why, where it was moved, and
    where the run resumes instead (the steps since then are run again). Default: a warning
    on stderr.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AttncnnError(f"cannot resume: run directory {run_dir} does not exist")
    errors = []
    for name in (LAST, PREVIOUS):
        if (run_dir / name).exists():
            try:
                state = load_checkpoint(run_dir / name)
            except AttncnnError as err:
                errors.append(str(err))
                continue
            if errors:  # move the damaged last.pt aside, or the next save would rotate it
                moved = f"moved to {DAMAGED}"  # over this good one (kept for inspection)
                try:
                    os.replace(run_dir / LAST, run_dir / DAMAGED)
                except OSError as err:
                    moved = f"could not be moved aside: {err.strerror or err}"
                _tell(notice, f"skipped {LAST}: {errors[0]} ({moved}); resuming from {name} "
                              f"at epoch {state.get('epoch', 0) + 1} step {state.get('step', 0)}: "
                              f"the steps since then are run again")
            return state
    if not errors:
        raise AttncnnError(f"cannot resume: {run_dir} holds no checkpoint (the run stopped "
                           f"before writing its first one); start it again with --config")
    raise AttncnnError(f"cannot resume: no usable checkpoint in {run_dir} ({'; '.join(errors)})")


def _tell(notice, text: str) -> None:
    if notice is None:
        import sys

        print(f"attncnn: warning: {text}", file=sys.stderr, flush=True)
    else:
        notice(f"warning: {text}")


def check_compatible(state: dict, model_name: str, num_classes: int, source: str) -> None:
    """Refuse a checkpoint of another model or class count, in one line."""
    if state.get("model_name") != model_name or state.get("num_classes") != num_classes:
        raise AttncnnError(
            f"{source} holds {state.get('model_name')} with {state.get('num_classes')} classes; "
            f"this run builds {model_name} with {num_classes} classes"
        )


def rng_state() -> dict:
    """Every generator a run may draw from, as tensors and plain values."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "python": [version, list(py_state), py_gauss],
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)

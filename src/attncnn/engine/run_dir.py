"""A run's directory: its name, how a new run picks one, and the files written there besides
checkpoints (engine/checkpoint.py) and results.json (engine/results.py).

    <out_dir>/<run name>/
        config.yaml        the resolved config (what --resume reads back)
        last.pt, ...       checkpoints
        metrics.jsonl      one line per epoch (engine/logger.py)
        model.safetensors  the final weights (attncnn.inference.weights)
        results.json       the results record
"""
from __future__ import annotations

import json
from pathlib import Path

from attncnn.engine import checkpoint as ckpt
from attncnn.engine.config import Config
from attncnn.errors import AttncnnError
from attncnn.files import atomic_target

RUN_FILES = ("config.yaml", ckpt.LAST, ckpt.PREVIOUS, "results.json")  # any: a run is there
WEIGHTS = "model.safetensors"


def run_name(cfg: Config) -> str:
    return cfg.run.name or f"{cfg.model.name}-{cfg.data.name}-s{cfg.run.seed}"


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def choose_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """(the directory a new run writes to, the taken default it moved away from, or None).

    run.name set: out_dir/name as it is (a run already there is refused, so that fixed
    names, e.g. a sweep's, never drift). Default name: the first of <name>, <name>-v2,
    <name>-v3, ... that holds no run, so running a config again never needs a new name.
    """
    first = Path(cfg.run.out_dir) / run_name(cfg)
    if cfg.run.name is not None or not holds_run(first):
        return first, None
    version = 2
    while holds_run(first.with_name(f"{first.name}-v{version}")):
        version += 1
    return first.with_name(f"{first.name}-v{version}"), first


def write_text_atomic(path: Path, text: str) -> None:
    """config.yaml is what --resume reads back: a half-written one (a kill or a full disk
    mid-write) would resume with defaults for the missing keys, so write a temp file and
    rename it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_target(path) as tmp:
            tmp.write_text(text)
    except OSError as err:
        raise AttncnnError(f"cannot write {path}: {err.strerror or err}") from None


def trim_metrics(path: Path, epochs_done: int) -> None:
    """On resume, drop the lines of epochs the checkpoint has not got (logged just before
    a kill, they will be run and logged again) and a line cut short by the kill."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("epoch", 0) <= epochs_done:
            keep.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in keep))


def export_weights(run_dir: Path, net, loaders, summary: dict) -> str:
    """The one place the final weights file is written (attncnn.inference.weights owns the
    format)."""
    from attncnn.inference.weights import save_weights

    path = Path(run_dir) / WEIGHTS
    save_weights(path, net, classes=list(loaders.classes), mean=tuple(loaders.mean),
                 std=tuple(loaders.std), input_size=tuple(loaders.input_size), summary=summary)
    return str(path)

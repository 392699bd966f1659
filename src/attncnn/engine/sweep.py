"""Sweeps: every (config, seed) trained once, across as many sessions as it takes.

    plan = plan_sweep(["configs/a.yaml", "configs/b.yaml"], seeds=[0, 1, 2], out_dir="runs/x")
    outcome = run_sweep(plan, publish_dir="results/x")

Each run has a fixed directory, `<out_dir>/<config stem>/<run name>` (the engine's
`run_name`, set as run.name so the engine never moves it to a `-v2`; a name fixed by the
config gets `-s<seed>` appended so seeds do not share it), so a sweep started again finds
what an earlier session left there:
    done    results.json says "finished": skipped (published if it is not yet)
    resume  a checkpoint: continued from it with the run's saved config.yaml
    new     nothing usable: trained from the start
With a publish folder, a run whose directory is gone (a new machine keeps the repository,
not the run directories) but whose finished results are published there, with their
weights, is done too: `plan_sweep(..., publish_dir="results/x")`.
Runs go seed-major (every config for seed 0, then seed 1, ...), so that a sweep cut short
already holds complete seed-paired comparisons.

A run is trained under a lock (`<run_dir>/sweep.lock`, holding the process id), so two
sweeps of the same configs, one per core, share the work: each passes over the run the
other is training ("busy"). The lock of a process that is gone is taken over.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from attncnn.engine import checkpoint as ckpt
from attncnn.engine.config import Config, config_to_dict, load_config
from attncnn.engine.device import resolve_device
from attncnn.engine.run_dir import run_name
from attncnn.engine.train import resume_config, train
from attncnn.errors import AttncnnError

# Keys that say where and how fast a run goes, not what it learns: a YAML that differs from
# a run's saved config only in these is not worth a warning. Every run.* key except the
# seed and the arithmetic (bf16 autocast); data loading workers and cache.
_SIGNIFICANT_RUN_KEYS = ("run.seed", "run.amp")
_RUN_ONLY_KEYS = ("data.workers", "data.cache_dir")
_SWEEP_KEYS = ("run.seed", "run.out_dir")  # set by the sweep itself (--seeds, --out-dir)


@dataclass
class PlannedRun:
    config: Path                        # the YAML file
    seed: int
    run_dir: Path
    state: str                          # "done" | "resume" | "new"
    cfg: Config | None = None           # what is trained: the YAML's, or the saved one (resume)
    position: tuple[int, int] | None = None  # resume: (epochs done, steps into the next)
    changed: list[str] = field(default_factory=list)  # keys where the YAML now differs
    note: str | None = None             # resume: why it cannot (no readable checkpoint, ...)
    published: Path | None = None       # done: its published results file (no run dir here)
    overrides: tuple[str, ...] = ()     # the sweep's --set values (a resume applies them too)

    def describe(self) -> str:
        if self.state == "done" and self.published is not None:
            return f"done (published: {self.published})"
        if self.state != "resume":
            return self.state
        if self.note or self.position is None or self.cfg is None:
            return f"resume ({self.note})" if self.note else "resume"
        epoch, step = self.position
        total = self.cfg.schedule.epochs
        if epoch >= total:
            return f"resume (all {total} epochs done; finish)"
        return f"resume at epoch {epoch + 1}/{total}" + (f" step {step}" if step else "")


def plan_sweep(configs: Sequence[str | Path], seeds: Sequence[int], out_dir: str | Path,
               overrides: Sequence[str] = (), *, publish_dir: str | Path | None = None,
               weights_dir: str | Path = "results/weights") -> list[PlannedRun]:
    """The runs of a sweep in the order they run, each with its state; writes nothing.

    Every config is loaded (and checked) before anything runs, so a bad path or key is one
    error up front. Two runs that would share a run directory are refused. A new run whose
    finished result is already in `publish_dir` (same model and seed, weights present) is
    done."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in _SWEEP_KEYS:
            flag = "--seeds" if key == "run.seed" else "--out-dir"
            raise AttncnnError(f"--set {key} is set by the sweep; use {flag}")
    if not configs:
        raise AttncnnError("sweep needs at least one config file")
    if not seeds:
        raise AttncnnError("sweep needs at least one seed (--seeds 0 1 2)")
    out_dir = Path(out_dir).expanduser()
    plan, owners = [], {}
    for seed in dict.fromkeys(seeds):           # seed-major; a repeated seed runs once
        for path in configs:
            path = Path(path)
            sweep_keys = [f"run.seed={seed}", f"run.out_dir={(out_dir / path.stem).as_posix()}"]
            cfg = load_config(path, [*overrides, *sweep_keys])
            # Named explicitly, so that the engine never moves the run to a free <name>-v2
            # when its directory already holds files (e.g. a run killed before its first
            # checkpoint); a name the config fixes gets the seed, or every seed would share it.
            cfg.run.name = f"{cfg.run.name}-s{seed}" if cfg.run.name else run_name(cfg)
            run = _plan_one(path, seed, Path(cfg.run.out_dir) / run_name(cfg), cfg, overrides)
            if run.state == "new" and publish_dir is not None:
                _find_published(run, Path(publish_dir), Path(weights_dir))
            other = owners.setdefault(run.run_dir, run)
            if other is not run:
                raise AttncnnError(f"{other.config} (seed {other.seed}) and {path} (seed {seed}) "
                                   f"would share the run directory {run.run_dir}; give the "
                                   f"config files distinct names")
            plan.append(run)
    return plan


def _plan_one(path: Path, seed: int, run_dir: Path, cfg: Config, overrides) -> PlannedRun:
    run = PlannedRun(config=path, seed=seed, run_dir=run_dir, state="new", cfg=cfg,
                     overrides=tuple(overrides))
    if not run_dir.is_dir():
        return run
    saved, why = None, f"{run_dir} has no config.yaml"
    if (run_dir / "config.yaml").is_file():
        try:
            saved = resume_config(run_dir, overrides)
        except AttncnnError as err:
            why = f"its saved config does not load: {err}"
    if saved is not None:
        run.changed = config_differences(cfg, saved)
    if _results_status(run_dir) == "finished":
        run.state, run.cfg = "done", saved or cfg   # what the run was trained with
        return run
    if not any((run_dir / name).exists() for name in (ckpt.LAST, ckpt.PREVIOUS)):
        return run                              # stopped before its first checkpoint
    run.state, run.cfg = "resume", saved
    run.position = _checkpoint_position(run_dir)
    if saved is None:
        run.note = why
    elif run.position is None:
        run.note = "no readable checkpoint"
    return run


def _find_published(run: PlannedRun, results_dir: Path, weights_dir: Path) -> None:
    """Mark a new run done when its published results are there: a finished run of the
    same model and seed, whose weights file exists."""
    c = run.cfg
    stem = _published_stem(c)
    target = results_dir / f"{stem}.json"
    try:
        record = json.loads(target.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(record, dict):
        return
    same = (record.get("status") == "finished" and record.get("model") == c.model.name
            and record.get("seed") == c.run.seed)
    if same and _weights_of(target, record, weights_dir / f"{stem}.safetensors").is_file():
        run.state, run.published = "done", target


def _weights_of(target: Path, record: dict, default: Path) -> Path:
    """The weights file a published results file names (wherever it was published), else
    where this sweep publishes them."""
    from attncnn.analysis.publish import published_weights_path

    return published_weights_path(target, record) or default


def _published_stem(cfg: Config) -> str:
    """The file name a run of `cfg` publishes under (publish.published_stem of its record)."""
    from attncnn.analysis.publish import published_stem

    return published_stem({"model": cfg.model.name, "seed": cfg.run.seed,
                           "tags": cfg.run.tags, "data": {"source": cfg.data.name}})


def _results_status(run_dir: Path) -> str | None:
    try:
        record = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return record.get("status") if isinstance(record, dict) else None


def _checkpoint_position(run_dir: Path) -> tuple[int, int] | None:
    """(epoch, step) of the checkpoint a resume will take: last.pt, else last.prev.pt. Like
    ckpt.find_resume_checkpoint, but moves nothing aside (a dry run changes no file)."""
    for name in (ckpt.LAST, ckpt.PREVIOUS):
        if (run_dir / name).exists():
            try:
                state = ckpt.load_checkpoint(run_dir / name)
            except AttncnnError:
                continue
            return int(state["epoch"]), int(state["step"])
    return None


def config_differences(a: Config, b: Config) -> list[str]:
    """Dotted keys where two configs differ, leaving out the run-only ones."""
    flat_a, flat_b = _flatten(config_to_dict(a)), _flatten(config_to_dict(b))
    keys = sorted(set(flat_a) | set(flat_b))
    return [k for k in keys if flat_a.get(k) != flat_b.get(k) and not _run_only(k)]


def _run_only(key: str) -> bool:
    if key.startswith("run."):
        return not any(key == k or key.startswith(k + ".") for k in _SIGNIFICANT_RUN_KEYS)
    return key in _RUN_ONLY_KEYS


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def publish_stem_clashes(plan: Sequence[PlannedRun]) -> None:
    """Refuse, before anything runs, two runs that would publish to the same file name."""
    seen = {}
    for run in plan:
        if run.cfg is None:
            continue
        stem = _published_stem(run.cfg)
        other = seen.setdefault(stem, run)
        if other is not run:
            raise AttncnnError(f"{other.run_dir} and {run.run_dir} would both publish as "
                               f"{stem}; give their configs distinct run.tags.row")


def run_sweep(plan: Sequence[PlannedRun], *, publish_dir: str | Path | None = None,
              weights_dir: str | Path = "results/weights", quiet: bool = False,
              echo=None) -> dict:
    """Run the plan in order; returns {"finished": [dirs], "failed": [(dir, error)],
    "busy": [dirs another sweep was training], "interrupted": the stopped run's record or
    None}.

    A run that fails with an AttncnnError (NaN loss, bad data, ...) is reported in one line
    and the sweep goes on; a run stopped by SIGINT/SIGTERM (checkpoint saved) ends the
    sweep at once. `echo(text, err=False)` prints a line (stderr with err=True)."""
    echo = echo or _echo
    outcome = {"finished": [], "failed": [], "busy": [], "interrupted": None}
    total = len(plan)
    for i, run in enumerate(plan, 1):
        if run.changed:
            keep = "keeping its result" if run.state == "done" else "using the saved config"
            echo(f"warning: {run.run_dir}: {run.config} now differs from the run's saved "
                 f"config.yaml in {', '.join(run.changed)}; {keep}", err=True)
        if run.state == "done" and run.published is not None:
            echo(f"done: published as {run.published}")
            outcome["finished"].append(run.run_dir)
            continue
        if run.state == "done":
            echo(f"done: {run.run_dir}")
        else:
            with _run_lock(run.run_dir) as holder:
                if holder is not None:
                    outcome["busy"].append(run.run_dir)
                    echo(f"busy: {run.run_dir} (another sweep, process {holder}, is "
                         f"training it)")
                    continue
                run = _replanned(run)
                if run.state == "done":           # another sweep finished it meanwhile
                    echo(f"done: {run.run_dir}")
                else:
                    echo(f"[{i}/{total}] {run.describe()}: {run.run_dir} ({run.config}, "
                         f"seed {run.seed})")
                    try:
                        record, minutes = _train(run, quiet)
                    except AttncnnError as err:
                        outcome["failed"].append((run.run_dir, str(err)))
                        echo(f"failed: {run.run_dir}: {err}", err=True)
                        continue
                    if record["status"] != "finished":
                        outcome["interrupted"] = record
                        return outcome
                    final = record.get("final") or {}
                    echo(f"finished: {run.run_dir}: top-1 "
                         f"{final.get('top1', float('nan')):.2f}%, {minutes:.1f} min")
        outcome["finished"].append(run.run_dir)
        if publish_dir is not None:
            try:
                echo(_publish(run, publish_dir, weights_dir))
            except AttncnnError as err:
                outcome["failed"].append((run.run_dir, str(err)))
                echo(f"failed to publish: {run.run_dir}: {err}", err=True)
    return outcome


LOCK = "sweep.lock"


@contextmanager
def _run_lock(run_dir: Path):
    """Hold `run_dir/sweep.lock` while the block runs; yields None when this process holds
    it, else the process id of the live sweep that does (and takes nothing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                yield holder
                return
            lock.unlink(missing_ok=True)          # its process is gone: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield None
    finally:
        lock.unlink(missing_ok=True)


def _lock_holder(lock: Path) -> int | None:
    """The live process that holds a lock file, or None (gone, or the file unreadable)."""
    try:
        pid = int(lock.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:       # alive, another user's
        pass
    return pid


def _replanned(run: PlannedRun) -> PlannedRun:
    """The run as its directory is now (checked under its lock): another sweep may have
    moved a new run on since the plan was made, finished it (done) or stopped it midway
    (resume, rather than start again over its files)."""
    if run.state != "new" or run.cfg is None:
        return run
    return _plan_one(run.config, run.seed, run.run_dir, run.cfg, run.overrides)


def _echo(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _train(run: PlannedRun, quiet: bool) -> tuple[dict, float]:
    if run.cfg is None:  # a resume whose saved config does not load
        raise AttncnnError(f"cannot resume: {run.note}")
    t0 = time.perf_counter()
    resume = run.run_dir if run.state == "resume" else None
    record = train(run.cfg, resume=resume, quiet=quiet)
    return record, (time.perf_counter() - t0) / 60


def _publish(run: PlannedRun, results_dir, weights_dir) -> str:
    """Publish a finished run (re-checking the published weights), unless already done."""
    from attncnn.analysis.publish import publish_run, published_stem, read_run

    record, _ = read_run(run.run_dir)
    stem = published_stem(record)
    target = Path(results_dir) / f"{stem}.json"
    if _already_published(target, Path(weights_dir) / f"{stem}.safetensors", record):
        return f"already published: {run.run_dir} -> {target}"
    published = publish_run(run.run_dir, results_dir, weights_dir, check=True,
                            device=_check_device(run.cfg))
    return (f"published: {run.run_dir} -> {target} (re-checked top-1 "
            f"{published['published_check']['top1']:.2f}%)")


def _already_published(target: Path, weights: Path, record: dict) -> bool:
    """The published file is this run's (publish's own test: run_name, seed, start time)
    and its weights file is there."""
    try:
        old = json.loads(target.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(old, dict):
        return False
    same = all(old.get(k) == record.get(k) for k in ("run_name", "seed", "started_at"))
    return same and _weights_of(target, old, weights).is_file()


def _check_device(cfg: Config | None) -> str:
    """Re-check on the device the run trained on where there is one (an ImageNet eval on a
    CPU takes long); the CPU otherwise."""
    try:
        return str(resolve_device(cfg.run.device)) if cfg is not None else "cpu"
    except AttncnnError:  # e.g. run.device=cuda in a session without a GPU
        return "cpu"

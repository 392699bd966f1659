"""Publish finished runs: their results file and a small weights file, into the repository.

    publish_run("runs/cifar10_jpeg/attn_resnet110/attn_resnet110_cifar-folder-s0",
                results_dir="results/cifar10_jpeg", weights_dir="results/weights")

A run directory holds `results.json` and `model.safetensors` (float32). Publishing writes
    <results_dir>/<stem>.json             the results record plus "published_weights"
    <weights_dir>/<stem>.safetensors      the weights, float16 by default (half the bytes)
with stem `<row>-<data>-s<seed>` (`published_stem`),
so that anyone can re-check the figure with `attncnn eval --weights`. With `check`, the
published weights are evaluated on the run's own eval split and the figure is recorded
beside the run's ("published_check"): a float16 copy may differ from float32 in the last
decimal. `recheck_published(results_file)` (`attncnn eval --results`) evaluates a published
file's weights again, on the data its run was evaluated on, and sets the figure beside
those the file records.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from attncnn.engine.results import SCHEMA
from attncnn.errors import AttncnnError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def read_record(path: Path) -> dict:
    """The results record in the file `path`; one-line errors if it is not one."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AttncnnError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise AttncnnError(f"{path} is not an attncnn results file")
    return record


def read_run(run_dir: str | Path) -> tuple[dict, Path]:
    """(results record, weights path) of a run directory; one-line errors if either is off."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AttncnnError(f"run directory {run_dir} does not exist")
    results, weights = run_dir / "results.json", run_dir / "model.safetensors"
    if not results.is_file():
        raise AttncnnError(f"{run_dir} has no results.json: is it a run directory?")
    record = read_record(results)
    if not weights.is_file():
        raise AttncnnError(f"{run_dir} has no model.safetensors (the run wrote no weights)")
    return record, weights


def published_stem(record: dict) -> str:
    """`<row>-<data>-s<seed>`, e.g. attn_resnet110-cifar10jpeg-s0: the row is the run's `row`
    tag (what tells apart runs of one model with other arguments, e.g. placements), else
    its model name; data is its `dataset` tag, else its data source."""
    tags = record.get("tags") or {}
    data = tags.get("dataset") or (record.get("data") or {}).get("source")
    data = re.sub(r"[^a-z0-9]+", "", str(data or "data").lower()) or "data"
    row = re.sub(r"[^A-Za-z0-9_.]+", "_", str(tags.get("row") or record.get("model") or "model"))
    return f"{row}-{data}-s{record.get('seed', 0)}"


def publish_run(run_dir: str | Path, results_dir: str | Path, weights_dir: str | Path, *,
                dtype: str = "float16", check: bool = False, allow_unfinished: bool = False,
                overwrite: bool = False, device: str = "cpu", tags: dict | None = None) -> dict:
    """Publish one run (see the module docstring); returns the published record.

    `tags` replace the run's own tags of those names in the published record (which keeps
    the overridden values under "published_tags_override"), e.g. to place a validation-split
    run in a table of its own; the file name follows the new tags.

    A run that has not finished is refused unless `allow_unfinished` (its record then says
    so: the report marks it). Existing published files of *another* run are never
    overwritten unless `overwrite`; re-publishing the same run replaces its files.
    """
    from attncnn.engine.results import write_json_atomic
    from attncnn.inference.weights import create_model_from_weights, save_weights

    if dtype not in DTYPES:
        raise AttncnnError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    record, weights = read_run(run_dir)
    status = record.get("status")
    if status != "finished" and not allow_unfinished:
        raise AttncnnError(f"{run_dir}: the run has not finished (status {status!r}, "
                           f"{record.get('epochs_completed')} epochs); resume it, or pass "
                           f"--allow-unfinished")
    if tags:
        record = dict(record, tags={**(record.get("tags") or {}), **tags},
                      published_tags_override={k: (record.get("tags") or {}).get(k) for k in tags})
    stem = published_stem(record)
    results_path = Path(results_dir) / f"{stem}.json"
    weights_path = Path(weights_dir) / f"{stem}.safetensors"
    _refuse_other_run(results_path, record, overwrite)

    model, meta = create_model_from_weights(weights, "cpu")
    save_weights(weights_path, model, classes=meta["classes"], mean=meta["mean"], std=meta["std"],
                 input_size=meta["input_size"], summary=meta.get("summary"),
                 dtype=DTYPES[dtype])
    published = dict(record)
    published["published_weights"] = repo_relative(weights_path)
    published["published_weights_dtype"] = dtype
    if check:
        published["published_check"] = check_published(weights_path, run_dir, record, device)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(published, results_path)
    return published


def repo_relative(path: Path) -> str:
    """`path` as the results file should name it: relative to the root of the git checkout
    that holds it (so that the name means the same on every clone), else as given."""
    absolute = Path(path).resolve()
    for parent in absolute.parents:
        if (parent / ".git").exists():
            return absolute.relative_to(parent).as_posix()
    return Path(path).as_posix()


def check_published(weights_path: Path, run_dir: str | Path, record: dict, device: str) -> dict:
    """Top-1 of the published weights on the run's eval split, beside the run's own."""
    from attncnn.engine.config import load_config
    from attncnn.inference.evaluation import evaluate_weights

    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise AttncnnError(f"{run_dir} has no config.yaml: cannot re-evaluate its weights")
    data_cfg = load_config(config).data
    result = evaluate_weights(weights_path, data_cfg, device=device)
    return {"top1": result["final"]["top1"], "top5": result["final"]["top5"],
            "split": result["data"]["split"], "run_top1": (record.get("final") or {}).get("top1"),
            "weights_sha256": result["weights_sha256"]}


def read_published(results_file: str | Path) -> tuple[dict, Path]:
    """(record, weights path) of a published results file; its weights are named relative to
    the root of the checkout holding the file (as `repo_relative` wrote them)."""
    path = Path(results_file)
    if not path.is_file():
        raise AttncnnError(f"results file {path} does not exist")
    record = read_record(path)
    weights = published_weights_path(path, record)
    if weights is None:
        raise AttncnnError(f"{path} has no published_weights: publish the run first "
                           f"(attncnn publish RUN_DIR --check)")
    if not weights.is_file():
        raise AttncnnError(f"{path}: its published weights {record['published_weights']} "
                           f"are not at {weights}")
    return record, weights


def published_weights_path(results_file: str | Path, record: dict) -> Path | None:
    """Where the weights a published results file names are: its "published_weights",
    relative to the root of the checkout holding the file (as `repo_relative` wrote it;
    the current directory outside a checkout). None: the file names none."""
    name = record.get("published_weights")
    if not name:
        return None
    roots = [parent for parent in Path(results_file).resolve().parents
             if (parent / ".git").exists()]
    return (roots[0] if roots else Path.cwd()) / name


def recheck_published(results_file: str | Path, root: str | None = None,
                      device: str = "cpu") -> dict:
    """Evaluate a published run's weights again on its eval split: an eval record (as
    `evaluate_weights` writes) with "recheck": the figure now, the figures the file records
    ("published_check", its float16 weights at publishing; "run_top1", the float32 run's),
    how many images apart from the published check (else the run's figure), and whether the weights are the file
    that was checked. root: where the data is on this machine (default: the run's root)."""
    import dataclasses

    from attncnn.engine.config import config_from_dict
    from attncnn.inference.evaluation import evaluate_weights

    record, weights = read_published(results_file)
    config = record.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        raise AttncnnError(f"{results_file} records no config: its data is unknown")
    data_cfg = config_from_dict({"data": config["data"]}, source=str(results_file)).data
    if root is not None:
        data_cfg = dataclasses.replace(data_cfg, root=root)
    elif data_cfg.root and not data_cfg.download and not Path(data_cfg.root).exists():
        raise AttncnnError(f"{results_file}: its data root {data_cfg.root} is not on this "
                           f"machine; pass --root")
    check = record.get("published_check") or {}
    split = check.get("split") or (record.get("data") or {}).get("eval_split") \
        or data_cfg.eval_split
    result = evaluate_weights(weights, data_cfg, split, device=device)
    top1, count = result["final"]["top1"], result["final"]["count"]
    run_top1 = (record.get("final") or {}).get("top1")
    # the published check evaluated these very weights; without one, the run's float32 figure
    reference = check.get("top1", run_top1)
    result["recheck"] = {
        "results_file": str(results_file),
        "top1": top1,
        "published_top1": check.get("top1"),
        "run_top1": run_top1,
        "images_apart": None if reference is None
        else round(abs(top1 - reference) * count / 100),
        "same_weights": check.get("weights_sha256") in (None, result["weights_sha256"]),
    }
    return result


def _refuse_other_run(path: Path, record: dict, overwrite: bool) -> None:
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    same = all(old.get(k) == record.get(k) for k in ("run_name", "seed", "started_at"))
    if not same:
        raise AttncnnError(f"{path} already holds another run ({old.get('run_name')!r} started "
                           f"{old.get('started_at')}); pass --overwrite to replace it")

"""The weights shipped inside the package: an index (index.json) and float16 safetensors
files beside it, one per (model, tag), chosen from the published results.

    list_pretrained()            # [{"model": ..., "tag": ..., "top1": ..., ...}, ...]
    ship(["results/digits_ablation/*.json"], tag="digits")   # refresh one tag from results
    render_table()               # the README's "Pretrained weights" table (markdown)

`ship` keeps, for every model among the results files given, the run with the best top-1
(the published file's own re-checked figure where there is one), copies its published
weights here as `<model>-<tag>.safetensors`, and rewrites the index entries of that tag.
Each entry records where its figure comes from (results file, commit, data, split) and the
mean of its row over seeds, because the best of several seeds, chosen on the test split,
is an optimistic figure.
"""
from __future__ import annotations

import glob
import json
import re
import shutil
from importlib import resources
from pathlib import Path

from attncnn.errors import AttncnnError
from attncnn.files import atomic_target, replace_marked_section, sha256_file

FORMAT = "attncnn.pretrained/1"
INDEX = "index.json"
BEGIN, END = "<!-- pretrained:begin -->", "<!-- pretrained:end -->"
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def package_dir() -> Path:
    """The folder the shipped files live in (inside the installed package)."""
    return Path(str(resources.files("attncnn.pretrained")))


def read_index(folder: str | Path | None = None) -> dict:
    path = Path(folder) / INDEX if folder else None
    try:
        text = path.read_text() if path else \
            resources.files("attncnn.pretrained").joinpath(INDEX).read_text()
    except FileNotFoundError:
        return {"format": FORMAT, "weights": []}
    index = json.loads(text)
    if index.get("format") != FORMAT:
        raise AttncnnError(f"pretrained index: unknown format {index.get('format')!r}")
    return index


def list_pretrained(model: str | None = None) -> list[dict]:
    """The shipped weights, one dict per (model, tag), optionally of one model only.

    Each has model, tag, file, model_args, num_classes, top1 (the shipped float16 file on
    the run's eval split), run_top1, row_top1_mean, row_seeds, data, split, results (the
    results file of the run), commit, seed, sha256, bytes.
    """
    entries = read_index()["weights"]
    return [dict(e) for e in entries if model is None or e["model"] == model]


def find_entry(model: str, tag: str) -> dict | None:
    return next((e for e in list_pretrained(model) if e["tag"] == tag), None)


def shipped_path(entry: dict) -> Path:
    return package_dir() / entry["file"]


def describe_available(model: str) -> str:
    """One phrase: the tags of `model`, or what is shipped at all."""
    tags = [e["tag"] for e in list_pretrained(model)]
    if tags:
        return f"{model} has: {', '.join(tags)}"
    everything = [f"{e['model']}:{e['tag']}" for e in list_pretrained()]
    return (f"{model} has no shipped weights (shipped: {', '.join(everything) or 'none'}; "
            f"see attncnn.list_pretrained())")


# ----------------------------------------------------------------------- shipping
def _results_files(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        for m in matches:
            p = Path(m)
            files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    if not files:
        raise AttncnnError(f"no results files in {' '.join(patterns)}")
    return files


def _published_top1(record: dict) -> float:
    check = record.get("published_check") or {}
    return float(check["top1"] if check.get("top1") is not None else record["final"]["top1"])


def ship(patterns: list[str], tag: str, dest: str | Path | None = None,
         root: str | Path = ".") -> list[dict]:
    """Refresh the shipped weights of `tag` from published results files; returns the entries.

    patterns: results JSON files, folders of them or globs (files that are not finished
        runs with published weights are skipped). Every chosen run must be on the same data.
    dest: the package folder to write (default: this package's own, i.e. the source tree
        of an editable install).
    root: the repository root that results' `published_weights` paths are relative to.
    Entries of other tags are kept; files of this tag's old entries are removed.
    """
    from attncnn.engine.results import SCHEMA as RESULTS_SCHEMA
    from attncnn.inference.weights import read_weights_metadata

    if not _TAG.match(tag):
        raise AttncnnError(f"tag {tag!r}: use lower-case letters, digits, - and _ "
                           f"(e.g. digits, cifar10, imagenette)")
    dest = Path(dest) if dest is not None else package_dir()
    root = Path(root)
    runs: dict[str, list[tuple[dict, Path]]] = {}
    for path in _results_files(patterns):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise AttncnnError(f"{path}: not readable JSON ({err})") from None
        if not isinstance(record, dict) or record.get("schema") != RESULTS_SCHEMA:
            continue                                  # bench / explain files beside results
        if record.get("status") != "finished" or not record.get("published_weights"):
            continue
        runs.setdefault(record["model"], []).append((record, path))
    if not runs:
        raise AttncnnError(f"no finished runs with published weights in {' '.join(patterns)}")

    entries = []
    data_names = set()
    for model, found in sorted(runs.items()):
        found.sort(key=lambda rp: (-_published_top1(rp[0]), rp[0].get("seed", 0), str(rp[1])))
        record, results_path = found[0]
        weights = root / record["published_weights"]
        if not weights.is_file():
            raise AttncnnError(f"{results_path}: its weights {weights} are missing")
        meta = read_weights_metadata(weights)
        if meta["model"] != model:
            raise AttncnnError(f"{weights} holds {meta['model']!r}, but {results_path} "
                               f"says {model!r}")
        row = (record.get("tags") or {}).get("row") or model
        same_row = [r for r, _ in found if ((r.get("tags") or {}).get("row") or r["model"]) == row
                    and r.get("model_args") == record.get("model_args")]
        data = record.get("data") or {}
        data_names.add(data.get("name"))
        env = record.get("env") or {}
        file = f"{model}-{tag}.safetensors"
        try:
            results_rel = results_path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            results_rel = results_path.as_posix()
        entries.append({
            "model": model, "tag": tag, "file": file,
            "model_args": meta["model_args"], "num_classes": meta["num_classes"],
            "input_size": meta["input_size"], "dtype": meta.get("dtype"),
            "top1": round(_published_top1(record), 4),
            "run_top1": round(float(record["final"]["top1"]), 4),
            "row": row, "seed": record.get("seed"),
            "row_top1_mean": round(sum(float(r["final"]["top1"]) for r in same_row)
                                   / len(same_row), 4),
            "row_seeds": len(same_row), "candidates": len(found),
            "data": data.get("name"), "data_source": data.get("source"),
            "split": data.get("eval_split"), "num_train": data.get("num_train"),
            "num_eval": data.get("num_eval"), "epochs": record.get("epochs_completed"),
            "results": results_rel, "commit": (env.get("git_commit") or "")[:7] or None,
            "weights_from": Path(record["published_weights"]).as_posix(),
            "sha256": sha256_file(weights), "bytes": weights.stat().st_size,
            "_source": weights,
        })
    if len(data_names) > 1:
        raise AttncnnError(f"tag {tag!r}: the runs are on different data "
                           f"({', '.join(sorted(map(str, data_names)))}); ship each under its own tag")

    index = read_index(dest)
    old = [e for e in index["weights"] if e["tag"] == tag]
    kept = [e for e in index["weights"] if e["tag"] != tag]
    dest.mkdir(parents=True, exist_ok=True)
    for e in entries:
        source = e.pop("_source")
        target = dest / e["file"]
        if not target.is_file() or sha256_file(target) != e["sha256"]:
            shutil.copyfile(source, target)
            target.chmod(0o644)
    new_files = {e["file"] for e in entries}
    for e in old:
        if e["file"] not in new_files:
            (dest / e["file"]).unlink(missing_ok=True)
    index["weights"] = sorted(kept + entries, key=lambda e: (e["tag"], e["model"]))
    with atomic_target(dest / INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=2) + "\n")
    return entries


# ----------------------------------------------------------------------- README
def _args_text(entry: dict) -> str:
    """The weights' model arguments that differ from the registered model's defaults."""
    from attncnn.models import get_spec

    defaults = get_spec(entry["model"]).defaults
    args = entry["model_args"]
    parts = []
    for key, value in sorted(args.items()):
        if key == "attention_placement":   # where the attention is: shown whenever there is one
            if args.get("attention") is not None:
                parts.append(f"{key}={value}")
            continue
        if key == "num_classes" or defaults.get(key) == value:
            continue
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        parts.append(f"{key}={value}")
    return ", ".join(parts) or "defaults"


def render_table(entries: list[dict] | None = None) -> str:
    """Markdown: one row per shipped (model, tag)."""
    entries = list_pretrained() if entries is None else entries
    if not entries:
        return "No weights are shipped yet.\n"
    lines = [
        "| model | tag | built with | top-1 | best of | row mean (seeds) | data (split) "
        "| results, commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| `{e['model']}` | `{e['tag']}` | {_args_text(e)} | {e['top1']:.2f} | {e['candidates']} "
            f"| {e['row_top1_mean']:.2f} ({e['row_seeds']}) | {e['data']} ({e['split']}) "
            f"| `{e['results']}`, `{e['commit']}` |")
    total = sum(e["bytes"] for e in entries)
    lines.append("")
    lines.append(
        f"Top-1 (%) of the shipped float16 file on the run's evaluation split. Each model's "
        f"file is the best of its published runs (\"best of\") on that same split, so its "
        f"figure is optimistic: the mean of its row (same arguments) over seeds is the fair "
        f"one. {len(entries)} files, {total / 1e6:.2f} MB in all. Generated from "
        f"`src/attncnn/pretrained/index.json` by `attncnn pretrained --readme README.md`.")
    return "\n".join(lines) + "\n"


def write_readme(readme: str | Path, entries: list[dict] | None = None) -> None:
    """Put `render_table()` between the README's pretrained markers."""
    replace_marked_section(readme, BEGIN, END, render_table(entries))

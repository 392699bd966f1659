"""Read the runs of benchmarks/cpu_time_split.sh and print where ours' extra seconds go
against airbench94 (issue 16): a table of every try at the shared rung (training seconds,
evaluation seconds, accuracy), then the gap split into parts, each the difference of two
measured runs, which add up to the gap exactly (a try's time is its training plus its
evaluation):

    evaluation precision   ref's ours eval_s - bf16eval's eval_s     (float32 vs bf16 eval)
    attention modules      bf16eval's time_s - noattn's time_s       (same loop, +attention)
    loop and rebuild       noattn's train_s - airbench's train_s     (our FastNet vs theirs)
    bf16 evaluation code   noattn's eval_s - airbench's eval_s
    noise                  ref's ours train_s - bf16eval's train_s   (the same training, run
                                                                      twice: the clock's noise)

    python benchmarks/cpu_time_split_summary.py [results/time_to_accuracy] [--markdown]

Prints what the files hold; it measures nothing itself and asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAMES = ("ref", "bf16eval", "noattn")
SIDES = {"ref": ("airbench", "ours"), "bf16eval": ("ours",), "noattn": ("ours",)}  # ladders each ran


class SplitError(Exception):
    pass


def load(directory: Path) -> dict[str, dict]:
    """name -> the results document of cpu-split-<name>.json; every one must be complete,
    with tries in each ladder it ran."""
    docs = {}
    for name in NAMES:
        path = directory / f"cpu-split-{name}.json"
        if not path.is_file():
            raise SplitError(f"{path} not found: run benchmarks/cpu_time_split.sh {name} first")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SplitError(f"{path}: not a readable JSON file ({err})") from None
        if not doc.get("complete"):
            raise SplitError(f"{path}: the run did not finish (complete is false)")
        for side in SIDES[name]:
            block = doc.get(side)
            if not isinstance(block, dict) or not block.get("tries"):
                raise SplitError(f"{path}: no {side} tries (an incomplete or different run)")
        docs[name] = doc
    return docs


def rows(docs: dict[str, dict]) -> list[dict]:
    """One line per try at the rung (each ladder's last try): who, epochs, train_s, eval_s,
    time_s, accuracy."""
    def line(label, name, side):
        t = docs[name][side]["tries"][-1]
        return {"label": label, "epochs": t["epochs"], "train_s": float(t["train_s"]),
                "eval_s": float(t["eval_s"]), "time_s": float(t["time_s"]),
                "accuracy": float(t["accuracy"]), "accuracy_float32": t.get("accuracy_float32"),
                "load": (t.get("loadavg_before"), t.get("loadavg_after"))}
    return [line("airbench94 (ref)", "ref", "airbench"),
            line("ours, float32 eval (ref)", "ref", "ours"),
            line("ours, bf16 eval (bf16eval)", "bf16eval", "ours"),
            line("ours without attention, bf16 eval (noattn)", "noattn", "ours")]


def split(lines: list[dict]) -> dict[str, float]:
    """The gap (ours ref - airbench ref, total seconds) and five parts that add up to it
    exactly, since each run's time is its training plus its evaluation."""
    airbench, ref, bf16, noattn = lines
    return {
        "gap (ours ref - airbench ref)": ref["time_s"] - airbench["time_s"],
        "evaluation precision (ref eval - bf16eval eval)": ref["eval_s"] - bf16["eval_s"],
        "attention modules (bf16eval - noattn, train + eval)": bf16["time_s"] - noattn["time_s"],
        "training loop and rebuild (noattn train - airbench train)":
            noattn["train_s"] - airbench["train_s"],
        "bf16 evaluation code (noattn eval - airbench eval)": noattn["eval_s"] - airbench["eval_s"],
        "noise: the same training twice (ref train - bf16eval train)":
            ref["train_s"] - bf16["train_s"],
    }


def render(lines: list[dict], parts: dict[str, float], markdown: bool) -> str:
    airbench_time = lines[0]["time_s"]
    out = []
    if markdown:
        out += ["| run | epochs | train s | eval s | total s | top-1 (%) | load before/after |",
                "|---|---|---|---|---|---|---|"]
    for r in lines:
        acc = f"{r['accuracy']:.2f}" + (f" (float32: {r['accuracy_float32']:.2f})"
                                         if r["accuracy_float32"] is not None else "")
        load = "/".join("?" if x is None else f"{x:.2f}" for x in r["load"])
        cells = [r["label"], str(r["epochs"]), f"{r['train_s']:.1f}", f"{r['eval_s']:.1f}",
                 f"{r['time_s']:.1f}", acc, load]
        out.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    out.append("")
    if markdown:
        out += ["| part | seconds | share of airbench's time |", "|---|---|---|"]
    for k, v in parts.items():
        share = f"{100 * v / airbench_time:+.1f}%"
        out.append(f"| {k} | {v:+.1f} | {share} |" if markdown else f"{k}: {v:+.1f} s ({share})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directory", nargs="?", default=str(Path(__file__).resolve().parents[1]
                                                       / "results" / "time_to_accuracy"))
    p.add_argument("--markdown", action="store_true", help="Markdown tables for docs/bench.md")
    args = p.parse_args(argv)
    directory = Path(args.directory)
    try:
        lines = rows(load(directory))
    except SplitError as err:
        print(f"cpu_time_split_summary: {err}", file=sys.stderr)
        return 2
    print(render(lines, split(lines), args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`attncnn publish`: copy finished runs' results and small weights into the repository.

    attncnn publish runs/cifar10_jpeg/resnet110/* --results results/cifar10_jpeg --check

Writes RESULTS/<row>-<data>-s<seed>.json and WEIGHTS/<same>.safetensors (float16 unless
--dtype says otherwise); `attncnn report` then shows the published weights beside each figure.
"""
from __future__ import annotations

import argparse

HELP = "publish finished runs: results JSON and float16 weights into the repository"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (results.json + "
                                                                "model.safetensors)")
    p.add_argument("--results", required=True, metavar="DIR",
                   help="folder for the results files, e.g. results/cifar10_jpeg")
    p.add_argument("--weights", default="results/weights", metavar="DIR",
                   help="folder for the weights files (default: results/weights)")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="precision of the published weights (default: float16)")
    p.add_argument("--check", action="store_true",
                   help="evaluate the published weights on the run's eval split and record it")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="publish a run that stopped before its last epoch (marked as such)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace published files that belong to another run")
    p.add_argument("--device", default="cpu", help="device for --check (default: cpu)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="set a tag of the published record (e.g. table=..., row=...), "
                        "placing the run in another report table or row (repeatable)")


def run(args: argparse.Namespace) -> int:
    from attncnn.analysis.publish import publish_run
    from attncnn.errors import AttncnnError

    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise AttncnnError(f"--tag {item!r}: expected KEY=VALUE, e.g. --tag row=resnet20_e6")
        tags[key.strip()] = value.strip()
    for run_dir in args.runs:
        record = publish_run(run_dir, args.results, args.weights, dtype=args.dtype,
                             check=args.check, allow_unfinished=args.allow_unfinished,
                             overwrite=args.overwrite, device=args.device, tags=tags)
        line = (f"{run_dir}: top-1 {record['final']['top1']:.2f} -> "
                f"{record['published_weights']}")
        if "published_check" in record:
            line += f" (re-checked: {record['published_check']['top1']:.2f})"
        print(line)
    return 0

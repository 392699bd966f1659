"""`attncnn train [CONFIG | --config FILE] [--set k=v ...] [--resume RUN_DIR]`: train and report.

Runs under torchrun as well: `torchrun --nproc_per_node=N -m attncnn train ...`.
Exit status: 0 finished, 2 an error (one line), 130 / 143 stopped by SIGINT / SIGTERM
after saving a checkpoint (continue with --resume RUN_DIR).
"""
from __future__ import annotations

import argparse
import sys

HELP = "train a model from a config file (or resume a run) and print its test accuracy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_file", nargs="?", metavar="CONFIG",
                   help="YAML run config (the same as --config)")
    p.add_argument("--config", "-c", help="YAML run config (e.g. configs/quickstart.yaml); "
                   "optional with --resume, which reuses the run's own config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.05 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--out-dir", help="parent directory of the run directory (run.out_dir)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar: one line per epoch")


def run(args: argparse.Namespace) -> int:
    import signal

    from attncnn.analysis.report_runs import split_label
    from attncnn.engine.config import load_config
    from attncnn.engine.metrics import percent
    from attncnn.engine.train import resume_config, train
    from attncnn.errors import AttncnnError

    if args.config_file and args.config and args.config_file != args.config:
        raise AttncnnError(f"two configs given: {args.config_file} and --config {args.config}")
    args.config = args.config or args.config_file
    overrides = list(args.overrides)
    if args.out_dir:
        overrides.append(f"run.out_dir={args.out_dir}")
    if args.config:
        cfg = load_config(args.config, overrides, check_data_root=True)
    elif args.resume:
        cfg = resume_config(args.resume, overrides)
    else:
        raise AttncnnError("train needs --config FILE (or --resume RUN_DIR)")
    record = train(cfg, resume=args.resume, quiet=args.quiet)
    if record.get("env", {}).get("world_size", 1) > 1 and not _is_rank0():
        return _exit_code(record, signal)
    final = record.get("final")
    where = f"{record['data']['name']} ({split_label(record['data'])})"
    if final is not None:
        print(f"{record['status']}: {record['model']} after {record['epochs_completed']} epochs: "
              f"{record['data']['eval_split']} top-1 {final['top1']:.2f}%, top-5 {percent(final['top5'])} on {where}; "
              f"run dir {record['run_dir']}")
    else:
        print(f"{record['status']}: {record['model']} after {record['epochs_completed']} epochs "
              f"(not evaluated yet); run dir {record['run_dir']}")
    if record["status"] == "interrupted":
        print(f"continue with: attncnn train --resume {record['run_dir']}", file=sys.stderr)
    return _exit_code(record, signal)


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _exit_code(record: dict, signal) -> int:
    if record["status"] == "interrupted" and "signal" in record:
        return 128 + int(signal.Signals[record["signal"]])
    return 0

"""`attncnn bench MODEL [MODEL ...]`: params, MACs, train/inference throughput, peak memory."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "measure parameters, MACs, training and inference throughput and peak memory of models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="registered model names (see `attncnn models`)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None,
                   help="square input side (default: each model's own, 32 CIFAR / 224 ImageNet)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode, e.g. reduce-overhead (CUDA graphs), max-autotune")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (default 3)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed window (default 10)")
    p.add_argument("--windows", type=int, default=3, help="timed windows; median reported (default 3)")
    p.add_argument("--baseline", default=None, help="model the step-time ratios refer to (default: first)")
    p.add_argument("--no-train", action="store_true", help="skip the training measurement")
    p.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead")


def run(args: argparse.Namespace) -> int:
    import torch

    from attncnn.analysis.bench import BenchSettings, bench_models, format_markdown, format_table
    from attncnn.errors import AttncnnError

    for flag in ("batch_size", "steps", "windows"):
        if getattr(args, flag) < 1:
            raise AttncnnError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or (args.image_size is not None and args.image_size < 8):
        raise AttncnnError("--warmup must be >= 0 and --image-size >= 8")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings(
        device=args.device, batch_size=args.batch_size, image_size=args.image_size,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile,
        compile_mode=args.compile_mode, warmup=args.warmup, steps=args.steps,
        windows=args.windows, train=not args.no_train, infer=not args.no_infer,
    )
    report = bench_models(args.models, settings, baseline=args.baseline,
                          progress=lambda msg: print(f"bench: {msg}", file=sys.stderr))
    report["argv"] = ["attncnn", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else None
    print(format_markdown(report) if args.markdown else format_table(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0

"""`attncnn predict --weights W.safetensors IMAGES...` (or `--model NAME --pretrained TAG`):
top-k classes of image files.

Exit status: 0 when every file was classified; 1 when some were not (each one is named on
stderr, the others are still printed); 2 when nothing could run (bad weights file, no
input matched).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys

HELP = "classify image files (files, folders or globs) with a weights file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--weights", "-w", help="a .safetensors file from attncnn")
    p.add_argument("--model", "-m", help="with --pretrained: a registered model name")
    p.add_argument("--pretrained", metavar="TAG",
                   help="instead of --weights: weights shipped with attncnn, e.g. "
                        "--model attn_resnet20_cifar --pretrained digits (`attncnn pretrained` "
                        "lists them)")
    p.add_argument("--top-k", "-k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default), json (one array) or csv (one row per class)")
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: average the image's and its mirror image's probabilities")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--crop-ratio", type=float, default=None,
                   help="resize the shorter side and keep this centre share (default: as the "
                        "weights' training data: whole image for folder data, 0.875 for "
                        "imagenet, else 1 up to 64 px and 0.875 above)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:N")


def run(args: argparse.Namespace) -> int:
    from attncnn.data.image_input import collect_images_or_refuse
    from attncnn.engine.device import resolve_device
    from attncnn.errors import AttncnnError
    from attncnn.inference.predict import Failure, predict_files
    from attncnn.inference.weights import create_model_from_weights

    if args.crop_ratio is not None and not 0 < args.crop_ratio <= 1:
        raise AttncnnError(f"--crop-ratio must be in (0, 1], got {args.crop_ratio}")
    if args.top_k < 1:
        raise AttncnnError(f"--top-k must be >= 1, got {args.top_k}")
    if (args.weights is None) == (args.pretrained is None):
        raise AttncnnError("pass --weights FILE, or --model NAME --pretrained TAG")
    if (args.model is None) != (args.pretrained is None):
        raise AttncnnError("--model and --pretrained go together (--weights names its model)")
    device = resolve_device(args.device, what="--device")
    if args.pretrained is not None:
        from attncnn.pretrained.load import model_for_prediction

        model, meta = model_for_prediction(args.model, args.pretrained, device)
    else:
        model, meta = create_model_from_weights(args.weights, device)
    inputs = collect_images_or_refuse(args.images)

    results = predict_files(model, meta, inputs.files, top_k=args.top_k,
                            batch_size=args.batch_size, tta=args.tta, device=device,
                            crop_ratio=args.crop_ratio)
    failed = len(inputs.missing)
    done = []
    file_width = max(len(f) for f in inputs.files)
    class_width = max(len(c) for c in meta["classes"])
    writer = csv.writer(sys.stdout) if args.format == "csv" else None
    if writer:
        writer.writerow(["file", "rank", "class", "index", "prob"])
    for r in results:
        if isinstance(r, Failure):
            failed += 1
            print(f"attncnn: skipped {r.reason}", file=sys.stderr)
        elif args.format == "json":
            done.append(r.to_dict())
        elif writer:
            for rank, (c, i, p) in enumerate(zip(r.classes, r.indices, r.probs), 1):
                writer.writerow([r.file, rank, c, i, f"{p:.6f}"])
        else:
            tops = "  ".join(f"{c:{class_width}s} {100 * p:5.1f}%"
                             for c, p in zip(r.classes, r.probs))
            print(f"{r.file:{file_width}s}  {tops}", flush=True)
    if args.format == "json":
        json.dump(done, sys.stdout, indent=2)
        print()
    return 1 if failed else 0

"""`attncnn eval`: accuracy of a weights file on a data split, with a confusion matrix.

    attncnn eval --weights W.safetensors --data cifar10 [--root PATH] [--split test]
    attncnn eval --run runs/NAME            # the run's model.safetensors and data section
    attncnn eval --results results/cpu_cifar10/resnet20-cifar10jpeg-s0.json [--root DATA]
                                            # a published run: its figure, measured again

Writes OUT/results.json ("kind": "eval") and OUT/confusion.png; OUT defaults to
RUN/eval-<split> with --run, else runs/eval/<weights name>-<data>-<split>. With --results
the exit status is 1 when the figure is more than --tolerance images away from the one the
file records for its published weights.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate weights on a data split: top-1/top-5, per-class accuracy, confusion matrix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--weights", "-w", help="a .safetensors file from attncnn (needs --data)")
    what.add_argument("--run", help="a run directory (model.safetensors + config.yaml)")
    what.add_argument("--results", help="a published results file (attncnn publish): its "
                                        "weights on its run's data and split, against its figure")
    p.add_argument("--data", help="data set name (digits, cifar10, cifar100, folder, imagenet); "
                                  "with --run: overrides the run's")
    p.add_argument("--root", help="data file or folder (data.root)")
    p.add_argument("--split", help="split to evaluate (default: the config's eval_split, 'test')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="override a data setting, e.g. --set data.eval_batch_size=256 (repeatable)")
    p.add_argument("--out", "-o", help="output folder for results.json and confusion.png")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:N")
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average each image's logits with its mirror's (default: as the run "
                        "that wrote the weights evaluated)")
    p.add_argument("--translate-tta", type=int, default=None, metavar="PIXELS",
                   help="also average in two copies shifted this many pixels diagonally, "
                        "0 for none (default: as the run that wrote the weights evaluated)")
    p.add_argument("--tolerance", type=int, default=1, metavar="IMAGES",
                   help="with --results: images the figure may move and still reproduce the "
                        "published one (default 1: thread counts can flip a tied image)")


def data_config(args: argparse.Namespace):
    """The DataConfig to evaluate on: the run's data section or the defaults, then --set,
    then --data / --root."""
    import dataclasses

    from attncnn.engine.config import load_config
    from attncnn.errors import AttncnnError

    for item in args.overrides:
        if not item.startswith("data."):
            raise AttncnnError(f"--set {item!r}: eval only takes data.* settings")
    if args.run:
        config = Path(args.run) / "config.yaml"
        if not config.is_file():
            raise AttncnnError(f"{args.run} is not a run directory (no config.yaml)")
        cfg = load_config(config, args.overrides).data
    else:
        if not args.data:
            raise AttncnnError("--weights needs --data NAME (or use --run RUN_DIR)")
        cfg = load_config(None, args.overrides).data
    changes = {k: v for k, v in (("name", args.data), ("root", args.root)) if v is not None}
    if "name" in changes and "root" not in changes and args.run:
        changes["root"] = None  # the run's root belongs to the run's data set
    return dataclasses.replace(cfg, **changes)


def run(args: argparse.Namespace) -> int:
    from attncnn.engine.device import resolve_device
    from attncnn.engine.metrics import percent
    from attncnn.errors import AttncnnError
    from attncnn.inference.evaluation import evaluate_weights, per_class_table, write_outputs

    if args.results:
        return recheck(args)
    cfg = data_config(args)
    weights = Path(args.weights) if args.weights else Path(args.run) / "model.safetensors"
    if args.run and not weights.is_file():
        raise AttncnnError(f"{args.run} has no model.safetensors (did the run finish?)")
    split = args.split or cfg.eval_split
    if args.translate_tta is not None and args.translate_tta < 0:
        raise AttncnnError(f"--translate-tta must be >= 0, got {args.translate_tta}")
    result = evaluate_weights(weights, cfg, split, resolve_device(args.device, what="--device"),
                              flip=args.flip_tta, translate=args.translate_tta)
    if args.out:
        out = Path(args.out)
    elif args.run:
        out = Path(args.run) / f"eval-{split}"
    else:
        out = Path("runs") / "eval" / f"{weights.name.removesuffix('.safetensors')}-{cfg.name}-{split}"
    paths = write_outputs(result, out)

    final, data = result["final"], result["data"]
    print(f"{result['model']} on {data['name']} ({split}, {final['count']} images): "
          f"top-1 {final['top1']:.2f}%  top-5 {percent(final['top5'])}  loss {final['loss']:.4f}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(per_class_table(result))
    print(f"wrote {paths['results']} and {paths['confusion']}")
    return 0


def recheck(args: argparse.Namespace) -> int:
    """--results: evaluate a published run's weights again and say whether they reproduce."""
    from attncnn.analysis.publish import recheck_published
    from attncnn.engine.device import resolve_device
    from attncnn.errors import AttncnnError
    from attncnn.inference.evaluation import write_outputs

    ignored = [flag for flag, value in (("--data", args.data), ("--split", args.split),
                                        ("--set", args.overrides), ("--flip-tta", args.flip_tta),
                                        ("--translate-tta", args.translate_tta))
               if value not in (None, [])]
    if ignored:
        raise AttncnnError(f"--results evaluates as the run did: {', '.join(ignored)} "
                           f"cannot be set with it (only --root, --device, --out)")
    result = recheck_published(args.results, args.root,
                               resolve_device(args.device, what="--device"))
    out = Path(args.out) if args.out else \
        Path("runs") / "eval" / f"{Path(args.results).stem}-recheck"
    paths = write_outputs(result, out)
    check, data = result["recheck"], result["data"]
    print(f"{result['model']} on {data['name']} ({data['split']}, {result['final']['count']} "
          f"images): top-1 {check['top1']:.2f}%")
    recorded = ", ".join(f"{what} {value:.2f}%" for what, value in (
        ("published weights at publishing", check["published_top1"]),
        ("the run's float32 weights", check["run_top1"])) if value is not None)
    print(f"{args.results} records: {recorded or 'no figure'}")
    if not check["same_weights"]:
        print("note: the weights file is not the one the published check evaluated")
    apart = check["images_apart"]
    figure = "published figure" if check["published_top1"] is not None else \
        "run's figure (no published check: float16 weights against float32)"
    if apart is None:
        print("nothing to compare with")
        verdict = 0
    elif apart <= args.tolerance:
        print(f"reproduces the {figure} ({apart} image{'s' * (apart != 1)} apart)")
        verdict = 0
    else:
        print(f"does NOT reproduce the {figure}: {apart} images apart "
              f"(tolerance {args.tolerance})")
        verdict = 1
    print(f"wrote {paths['results']} and {paths['confusion']}")
    return verdict

"""Time to a target accuracy on CIFAR-10 (JPEG q75 copy): our fastest attention recipe
beside airbench, in one command, on the same device and the same decoded images.

    PYTHONPATH=src python benchmarks/time_to_accuracy.py [--target 94] \
        [--data ../shared/data/cifar10-jpeg.tar.gz] [--epochs 18,24,32] \
        [--airbench-epochs 9.9,12,16] [--compile-mode reduce-overhead] [--out results/...json]
    PYTHONPATH=src python benchmarks/time_to_accuracy.py --device cpu --target 90 [--threads N]
    PYTHONPATH=src python benchmarks/time_to_accuracy.py --device cpu --target 90 \
        --val-fraction 0.1 [--recipe width=24 ...] [--airbench-set lookahead=false ...]
    PYTHONPATH=src python benchmarks/time_to_accuracy.py --smoke --threads 1  # tiny, end to end

--device cuda (the default) needs a CUDA GPU (without one it says so in one line and exits
2). --device cpu runs both ladders on the CPU: ours with the CPU recipe (`cpu_recipe()`:
channels_last, bf16 autocast where the CPU computes bf16 natively, eager, float32 final
evaluation), airbench's own code with its CUDA mapped to the CPU and bf16 autocast in place
of its fp16 where the CPU has bf16 (else fp32) (benchmarks/tta_airbench.py). --threads sets
torch's CPU threads (default: one per core). --smoke runs a few steps of both on 120 images
with narrow nets on the CPU, to show the script works end to end (its figures mean nothing).

Recipes: `tta_ours.RECIPE` (GPU) and `tta_ours.cpu_recipe()` (CPU), docs/bench.md; --recipe
KEY=VALUE overrides a field or a model argument, --airbench-set KEY=VALUE an airbench
option (`AirbenchOptions`: precision, batch_size, tta_level, lookahead, whiten, widths), for
the validation runs that fix a recipe and the ablations that explain a gap.

Both are fixed-length schedules, so "time to target" is measured as a ladder: each side
trains with its first schedule length, and if the accuracy misses the target, retrains from
scratch with the next; the time reported is that of the first run that reaches the target
(training + final evaluation; compile/warm-up is a separate figure, `warmup_s`), and every
try is kept in the results file. A try evaluated under bf16 autocast (`eval_amp`) also
records `accuracy_float32`: the same weights evaluated in float32 after the clock stops, so
the two precisions pair up. Evaluation is on the 5,000-image `test` folder of the
tarball, or, with --val-fraction F, on F of the training images held out exactly as
`data.val_fraction` does (stratified, data.seed 0), training on the rest: the test half is
then never loaded (tune there, never on test). airbench runs first, and the file is
rewritten after every try ("complete": false until both ladders end), so a time limit that
stops the command keeps every finished try.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tta_ours, tta_airbench

from attncnn.data import DataConfig  # noqa: E402
from attncnn.data.dataset import ArrayDataset  # noqa: E402
from attncnn.data.sources import load_split  # noqa: E402
from attncnn.engine.environment import environment, utc_now  # noqa: E402
from attncnn.engine.results import write_json_atomic  # noqa: E402
from tta_airbench import (AirbenchOptions, import_airbench, torchvision_used,  # noqa: E402
                          train_airbench, warm_up_airbench, write_airbench_files)
from tta_ours import (RECIPE, Ours, Recipe, cpu_recipe, fast_cpu_recipe, one_cycle,  # noqa: E402,F401
                      with_overrides)

LADDERS = {  # (ours, airbench) schedule lengths in epochs, tried in order
    "cuda": ("18,24,32", "9.9,12,16"),
    "cpu": ("6,8,10,12,16", "2,3,4,5,6,8"),
}


# ---------------------------------------------------------------- data

def load_data(path: Path, smoke: bool, val_fraction: float = 0.0
              ) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, evaluation) images of the tarball, decoded once by the `folder` source (cached):
    train and test, or with `val_fraction` the rest of train and the held-out share of it
    (`load_split`'s "val", as `data.val_fraction` gives `attncnn train`)."""
    cfg = DataConfig(name="folder", root=str(path), val_fraction=val_fraction)
    train = load_split(cfg, "train")
    held = load_split(cfg, "val" if val_fraction > 0 else "test")
    if smoke:  # a few images per class, so a CPU can run the whole script
        train, held = _per_class(train, 12), _per_class(held, 4)
    return train, held


def _per_class(data: ArrayDataset, k: int) -> ArrayDataset:
    index = torch.cat([(data.labels == c).nonzero().flatten()[:k] for c in range(data.num_classes)])
    return data.subset(index.sort().values)


# ---------------------------------------------------------------- ladder + main

def ladder(name: str, run_one, lengths: list, target: float, side: dict, save) -> dict:
    """Train with each schedule length in turn until one reaches `target` (percent).

    Each try is added to side["tries"] (with its start time and the machine's 1-minute load
    average before and after, which tell whether other work shared the machine) and
    `save()`d as it ends, so a run stopped by a time limit keeps every finished try."""
    tries = side.setdefault("tries", [])
    for length in lengths:
        started, load_before = utc_now(), _load()
        result = {**run_one(length), "started_at": started, "loadavg_before": load_before,
                  "loadavg_after": _load()}
        tries.append(result)
        save()
        print(f"  {name}: {length} epochs -> {result['accuracy']:.2f}% in {result['time_s']:.2f} s "
              f"(train {result['train_s']:.2f} s + eval {result['eval_s']:.2f} s)"
              + (f"; the same weights in float32: {result['accuracy_float32']:.2f}%"
                 if "accuracy_float32" in result else ""), flush=True)
        if result["accuracy"] >= target:
            return {"reached": True, "time_to_target_s": result["time_s"], "epochs": length,
                    "accuracy": result["accuracy"], "tries": tries}
    return {"reached": False, "time_to_target_s": None, "epochs": None,
            "accuracy": tries[-1]["accuracy"], "tries": tries}


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def parse_lengths(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = Path(os.environ.get("ATTNCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    p.add_argument("--data", default=str(shared / "cifar10-jpeg.tar.gz"),
                   help="the CIFAR-10 JPEG tarball (default: $ATTNCNN_SHARED_DATA or ../shared/data)")
    p.add_argument("--target", type=float, default=94.0, help="accuracy, percent (default 94)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: one per core)")
    p.add_argument("--epochs", default=None, help="our schedule lengths to try, in order "
                   f"(default: {LADDERS['cuda'][0]} on a GPU, {LADDERS['cpu'][0]} on the CPU)")
    p.add_argument("--airbench-epochs", default=None, help="airbench94's schedule lengths "
                   f"(its own is 9.9; default {LADDERS['cuda'][1]} on a GPU, "
                   f"{LADDERS['cpu'][1]} on the CPU)")
    p.add_argument("--base", choices=("resnet9", "fastnet"), default="resnet9",
                   help="our recipe to start from: resnet9 (`cpu_recipe()` on the CPU, RECIPE on "
                        "a GPU) or fastnet (`fast_cpu_recipe()`: attn_fastnet, airbench94's "
                        "shape and hyperparameters)")
    p.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of our recipe or a model argument (repeatable)")
    p.add_argument("--airbench-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an airbench option: precision, batch_size, tta_level, lookahead, "
                        "whiten, widths (repeatable; the defaults are airbench's own)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="evaluate on this share of train held out (data.val_fraction's split) "
                        "instead of the test half, training on the rest")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for ours, "
                   "e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-airbench", action="store_true")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="CPU, 120 images, narrow nets, one short epoch of both: proves the "
                        "script runs end to end, measures nothing")
    p.add_argument("--out", default=None, help="results JSON (default results/time_to_accuracy/"
                   "<device>-<split>-<time>.json; with --smoke runs/...)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke else args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("time_to_accuracy: --device cuda needs a CUDA GPU (this torch sees none); "
                  "use --device cpu, or --smoke for a quick check of the script", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
    elif device.type != "cpu":
        print(f"time_to_accuracy: --device {args.device}: cuda[:N] or cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.base == "fastnet":
        recipe = fast_cpu_recipe()
        if device.type != "cpu":
            recipe = replace(recipe, amp=True, eval_amp=True, compile=not args.no_compile,
                             compile_mode=args.compile_mode)
    elif device.type == "cpu":
        recipe = cpu_recipe()
    else:
        recipe = Recipe(compile=not args.no_compile, compile_mode=args.compile_mode)
    if args.smoke:  # the CPU path, narrow and small
        recipe = with_overrides(recipe, ["batch_size=16", "widths=[8,16,16]", "whiten_images=64"]
                                if args.base == "fastnet" else ["batch_size=16", "width=8"])
    recipe = with_overrides(recipe, args.recipe)
    ab_options = AirbenchOptions().with_overrides(args.airbench_set)
    data_path = Path(args.data)
    if not data_path.exists():
        print(f"time_to_accuracy: data not found: {data_path}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    train, held = load_data(data_path, args.smoke, args.val_fraction)
    split = "val" if args.val_fraction > 0 else "test"
    print(f"data: {len(train)} train / {len(held)} {split} images from {data_path.name} "
          f"(decoded/cached in {time.perf_counter() - t0:.1f} s); {device}, "
          f"{torch.get_num_threads()} torch threads", flush=True)

    ours_default, ab_default = LADDERS[device.type]
    ours_lengths = [1] if args.smoke else parse_lengths(args.epochs or ours_default, int)
    ab_lengths = [1.0] if args.smoke else parse_lengths(args.airbench_epochs or ab_default)
    result = {"schema": "attncnn.time_to_accuracy/2", "smoke": args.smoke, "complete": False,
              "argv": sys.argv if argv is None else ["time_to_accuracy.py", *argv],
              "created_at": utc_now(), "target": args.target, "device": str(device),
              "threads": torch.get_num_threads(), "data": {
                  "path": data_path.name, "name": "CIFAR-10 (JPEG q75 copy)",
                  "eval_split": split, "val_fraction": args.val_fraction,
                  "num_train": len(train), "num_eval": len(held)},
              "env": environment(device), "airbench": None, "ours": None}
    # a smoke run's file goes to the git-ignored runs/: it is no result
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else (
        ROOT / "runs" / f"time_to_accuracy-smoke-{stamp}.json" if args.smoke else
        ROOT / "results" / "time_to_accuracy" / f"{device.type}-{split}-{stamp}.json")

    def save() -> None:  # after every try: a time limit never loses a finished one
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(result, out)

    # airbench first: it is the short, fixed reference, and a time limit then cuts ours
    if not args.skip_airbench:
        ab = import_airbench()
        side = result["airbench"] = {
            "package_version": getattr(ab, "__version__", None) or _version("airbench"),
            "variant": "train94", "options": ab_options.record(device),
            "torchvision": torchvision_used()}
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            write_airbench_files(train, held, workdir)
            print("airbench (train94): warming up ...", flush=True)
            side["warmup_s"] = warm_up_airbench(ab, device, workdir, ab_options, args.smoke)
            side["seed"] = args.seed  # each try seeds torch's generator with it
            side.update(ladder("airbench", lambda e: train_airbench(
                ab, e, device, workdir, ab_options, args.smoke, seed=args.seed), ab_lengths,
                args.target, side, save))
    if not args.skip_ours:
        side = result["ours"] = {"recipe": asdict(recipe)}
        print(f"ours ({recipe.model} {recipe.model_args}): warming up ...", flush=True)
        ours = Ours(recipe, train, held, device, args.seed)
        side["warmup_s"] = ours.warm_up()
        side.update(ladder("ours", ours.train, ours_lengths, args.target, side, save))

    result["complete"] = True
    ours_t = (result["ours"] or {}).get("time_to_target_s")
    ab_t = (result["airbench"] or {}).get("time_to_target_s")
    result["ratio_ours_over_airbench"] = ours_t / ab_t if ours_t and ab_t else None
    print(f"\ntarget {args.target:.2f}% on {result['data']['name']} {split} ({len(held)} images), "
          f"{result['env']['device_name']}{' [SMOKE: tiny run, figures meaningless]' if args.smoke else ''}")
    for name in ("ours", "airbench"):
        if result[name]:
            print(f"  {name:8s} {_fmt(result[name])}")
    if result["ratio_ours_over_airbench"]:
        print(f"  ours / airbench wall time = {result['ratio_ours_over_airbench']:.2f}")
    save()
    print(f"wrote {out}")
    return 0


def _fmt(side: dict) -> str:
    warm = f"; warm-up {side['warmup_s']:.1f} s apart"
    if side["reached"]:
        return (f"{side['time_to_target_s']:8.2f} s  ({side['epochs']} epochs, "
                f"{side['accuracy']:.2f}%{warm})")
    return f"not reached: the last schedule tried ended at {side['accuracy']:.2f}%{warm}"


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())

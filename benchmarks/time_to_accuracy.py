"""Time to a target test accuracy on CIFAR-10 (JPEG q75 copy): our fastest attention recipe
beside airbench, in one command, on the same GPU and the same decoded images.

    PYTHONPATH=src python benchmarks/time_to_accuracy.py [--target 94] \
        [--data ../shared/data/cifar10-jpeg.tar.gz] [--epochs 18,24,32] \
        [--airbench-epochs 9.9,12,16] [--compile-mode reduce-overhead] [--out results/...json]
    PYTHONPATH=src python benchmarks/time_to_accuracy.py --smoke     # CPU, tiny, end to end

Needs a CUDA GPU (on a machine without one it says so in one line and exits 2), except with
--smoke, which runs a few steps of both (narrow nets, 120 images, fp32) on the CPU to show the script
works end to end (its accuracies and times mean nothing).

Our recipe (`RECIPE`, docs/bench.md), trained with the engine's step and optimiser
(`attncnn.engine.step`, `attncnn.engine.optim`: what `attncnn train` runs): attn_resnet9 (ResNet-9 of "How to train your
ResNet" with the paper's spatial softmax attention after each stage), batch 512, SGD Nesterov
0.9, peak lr 0.4 with a linear one-cycle (20% up, then down to 0), weight decay 5e-4, label
smoothing 0.2, random translation 4 px + flip (drawn per epoch on the CPU, applied on the
GPU by `attncnn.data.DeviceLoader`), bf16 autocast, channels_last,
torch.compile, evaluation with flip test-time augmentation.
airbench: the `airbench` package's train94 (its airbench94 network and recipe, its own data
loader and TTA), fed the same JPEG-decoded images through the train.pt/test.pt files its
CifarLoader reads (benchmarks/tta_airbench.py).

Both are fixed-length schedules, so "time to target" is measured as a ladder: each side
trains with its first schedule length, and if the test accuracy misses the target, retrains
from scratch with the next; the time reported is that of the first run that reaches the
target (training + final evaluation, compile/warm-up excluded for both), and every try is
kept in the results file. Test split = the 5,000-image `test` folder of the tarball (we do
not tune on it: the recipes are fixed in advance). airbench runs first, and the file is
rewritten after every try ("complete": false until both ladders end), so a time limit that
stops the command keeps every finished try.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tta_airbench, beside this file

from attncnn.data import DataConfig, DeviceLoader  # noqa: E402
from attncnn.data.dataset import ArrayDataset  # noqa: E402
from attncnn.data.sources import load_split  # noqa: E402
from attncnn.engine.config import OptimConfig  # noqa: E402
from attncnn.engine.device import synchronize  # noqa: E402
from attncnn.engine.environment import environment  # noqa: E402
from attncnn.engine.optim import build_loss, build_optimizer  # noqa: E402
from attncnn.engine.results import write_json_atomic  # noqa: E402
from attncnn.engine.step import autocast_dtype, make_infer_step, make_train_step  # noqa: E402
from attncnn.models import create_model  # noqa: E402
from tta_airbench import (airbench_on_cpu, import_airbench, train_airbench,  # noqa: E402
                          warm_up_airbench, write_airbench_files)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Recipe:
    model: str = "attn_resnet9"
    batch_size: int = 512
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    warmup_fraction: float = 0.2
    crop_padding: int = 4
    amp: bool = True
    channels_last: bool = True
    compile: bool = True
    compile_mode: str | None = None
    flip_tta: bool = True
    model_args: dict = field(default_factory=dict)  # create_model overrides (smoke: width)

    def optim(self) -> OptimConfig:
        """The engine's optimiser and loss settings for this recipe (SGD, Nesterov)."""
        return OptimConfig(lr=self.lr, momentum=self.momentum, nesterov=True,
                           weight_decay=self.weight_decay, label_smoothing=self.label_smoothing)


RECIPE = Recipe()


def one_cycle(total_steps: int, warmup_fraction: float = 0.2):
    """LR multiplier: linear 0 -> 1 over the first `warmup_fraction` of steps, then -> 0."""
    peak = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < peak:
            return (step + 1) / peak
        return max(0.0, (total_steps - step) / max(1, total_steps - peak))
    return factor


# ---------------------------------------------------------------- data

def load_data(path: Path, smoke: bool) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and test splits of the tarball, decoded once by the `folder` source (cached)."""
    cfg = DataConfig(name="folder", root=str(path))
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    if smoke:  # a few images per class, so a CPU can run the whole script
        train, test = _per_class(train, 12), _per_class(test, 4)
    return train, test


def _per_class(data: ArrayDataset, k: int) -> ArrayDataset:
    index = torch.cat([(data.labels == c).nonzero().flatten()[:k] for c in range(data.num_classes)])
    return data.subset(index.sort().values)


# ---------------------------------------------------------------- ours

def build_ours(recipe: Recipe, device: torch.device, num_classes: int):
    model = create_model(recipe.model, num_classes=num_classes, **recipe.model_args).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model, mode=recipe.compile_mode) if recipe.compile else model
    return model, run


class Ours:
    """Our recipe on one device. The model is built and compiled once; every run restores the
    same initial weights into it, so compilation happens once, in the warm-up, and never
    inside a timed run. Every run also sees the same batches: epoch e's order, crops and
    flips are a function of (seed, e)."""

    def __init__(self, recipe: Recipe, train: ArrayDataset, test: ArrayDataset,
                 device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        self.recipe, self.device = recipe, device
        self.model, self.run = build_ours(recipe, device, train.num_classes)
        self.initial = copy.deepcopy(self.model.state_dict())
        train, test = (replace(d, mean=CIFAR_MEAN, std=CIFAR_STD) for d in (train, test))
        self.batches = DeviceLoader(train, recipe.batch_size, train=True, device=device,
                                    seed=seed, crop_padding=recipe.crop_padding,
                                    channels_last=recipe.channels_last)
        self.test_batches = DeviceLoader(test, 1000, train=False, device=device,
                                         channels_last=recipe.channels_last)

    def warm_up(self, steps: int = 3) -> float:
        """Compile and autotune (training and evaluation graphs); seconds taken."""
        start = time.perf_counter()
        self.train(epochs=1, max_steps=steps)
        return time.perf_counter() - start

    def train(self, epochs: int, max_steps: int | None = None) -> dict:
        """Train from the initial weights for `epochs`; accuracy, timings, loss per epoch."""
        recipe, device, model = self.recipe, self.device, self.model
        model.load_state_dict(self.initial)  # in place: the compiled code stays valid
        synchronize(device)
        start = time.perf_counter()
        optimizer = build_optimizer(model, recipe.optim(), device)  # what `attncnn train` builds
        total = epochs * len(self.batches)
        total = total if max_steps is None else min(max_steps, total)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                     one_cycle(total, recipe.warmup_fraction))
        step = make_train_step(self.run, optimizer, build_loss(recipe.optim()), device,
                               autocast_dtype(recipe.amp))  # the step `attncnn train` runs
        epoch_losses, steps = [], 0
        model.train()
        while steps < total:
            loss_sum = torch.zeros((), device=device)
            epoch = len(epoch_losses)  # counted from 0 in every run
            for x, y in self.batches.epoch(epoch):
                loss_sum += step(x, y)[0]  # stays on the device: no sync in the loop
                schedule.step()
                steps += 1
                if steps >= total:
                    break
            epoch_losses.append(loss_sum)
        synchronize(device)
        train_s = time.perf_counter() - start
        accuracy = self.evaluate()
        synchronize(device)
        total_s = time.perf_counter() - start
        return {"epochs": epochs, "steps": steps, "accuracy": accuracy, "train_s": train_s,
                "eval_s": total_s - train_s, "time_s": total_s,
                "epoch_loss": [float(l) / len(self.batches) for l in epoch_losses]}

    def evaluate(self) -> float:
        """Top-1 percent on the test images (flip TTA if the recipe says so)."""
        self.model.eval()
        infer = make_infer_step(self.run, self.device, autocast_dtype(self.recipe.amp),
                                flip=self.recipe.flip_tta)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for x, y in self.test_batches.epoch():
            correct += (infer(x).argmax(1) == y).sum()
        self.model.train()
        return 100.0 * int(correct) / self.test_batches.num_samples


# ---------------------------------------------------------------- ladder + main

def ladder(name: str, run_one, lengths: list, target: float, side: dict, save) -> dict:
    """Train with each schedule length in turn until one reaches `target` (percent).

    Each try is added to side["tries"] and `save()`d as it ends, so a run stopped by a time
    limit keeps every finished try."""
    tries = side.setdefault("tries", [])
    for length in lengths:
        result = run_one(length)
        tries.append(result)
        save()
        print(f"  {name}: {length} epochs -> {result['accuracy']:.2f}% in {result['time_s']:.2f} s "
              f"(train {result['train_s']:.2f} s + eval {result['eval_s']:.2f} s)", flush=True)
        if result["accuracy"] >= target:
            return {"reached": True, "time_to_target_s": result["time_s"], "epochs": length,
                    "accuracy": result["accuracy"], "tries": tries}
    return {"reached": False, "time_to_target_s": None, "epochs": None,
            "accuracy": tries[-1]["accuracy"], "tries": tries}


def parse_lengths(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = Path(os.environ.get("ATTNCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    p.add_argument("--data", default=str(shared / "cifar10-jpeg.tar.gz"),
                   help="the CIFAR-10 JPEG tarball (default: $ATTNCNN_SHARED_DATA or ../shared/data)")
    p.add_argument("--target", type=float, default=94.0, help="test accuracy, percent (default 94)")
    p.add_argument("--epochs", default="18,24,32", help="our schedule lengths to try, in order")
    p.add_argument("--airbench-epochs", default="9.9,12,16",
                   help="airbench94 schedule lengths to try, in order (its default is 9.9)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for ours, "
                   "e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-airbench", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="CPU, 120 images, narrow nets, a few steps of both: proves the script "
                        "runs end to end, measures nothing")
    p.add_argument("--out", default=None, help="results JSON (default results/time_to_accuracy-"
                   "<time>.json; with --smoke runs/...)")
    args = p.parse_args(argv)

    if args.smoke:
        device = torch.device("cpu")
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        device = torch.device(args.device)
        if device.type != "cuda" or not torch.cuda.is_available():
            print("time_to_accuracy: needs a CUDA GPU (this torch sees none); "
                  "use --smoke for a CPU check of the script", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
    recipe = Recipe(compile=not args.no_compile, compile_mode=args.compile_mode)
    if args.smoke:  # fp32 (CPUs without bf16 units crawl under autocast), eager, narrow
        recipe = Recipe(batch_size=16, amp=False, compile=False, model_args={"width": 8})
    data_path = Path(args.data)
    if not data_path.exists():
        print(f"time_to_accuracy: data not found: {data_path}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    train, test = load_data(data_path, args.smoke)
    print(f"data: {len(train)} train / {len(test)} test images from {data_path.name} "
          f"(decoded/cached in {time.perf_counter() - t0:.1f} s)", flush=True)

    ours_lengths = [1] if args.smoke else parse_lengths(args.epochs, int)
    ab_lengths = [1.0] if args.smoke else parse_lengths(args.airbench_epochs)
    result = {"schema": "attncnn.time_to_accuracy/1", "smoke": args.smoke, "complete": False,
              "target": args.target, "data": {"path": data_path.name,
              "name": "CIFAR-10 (JPEG q75 copy)", "num_train": len(train), "num_test": len(test)},
              "env": environment(device), "airbench": None, "ours": {"recipe": asdict(recipe)}}
    # a smoke run's file goes to the git-ignored runs/: it is no result
    out = Path(args.out) if args.out else ROOT / ("runs" if args.smoke else "results") / (
        f"time_to_accuracy-{'smoke-' if args.smoke else ''}{time.strftime('%Y%m%d-%H%M%S')}.json")

    def save() -> None:  # after every try: a time limit never loses a finished one
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(result, out)

    # airbench first: it is the short, fixed reference, and a time limit then cuts ours
    if not args.skip_airbench:
        ab = import_airbench(args.smoke)
        with tempfile.TemporaryDirectory() as tmp, \
                (airbench_on_cpu(ab) if device.type == "cpu" else contextlib.nullcontext()):
            workdir = Path(tmp)
            write_airbench_files(train, test, workdir)
            print("airbench (train94): warming up ...", flush=True)
            warm = warm_up_airbench(ab, device, workdir, args.smoke)
            result["airbench"] = {"package_version": getattr(ab, "__version__", None) or _version("airbench"),
                                  "variant": "train94", "warmup_s": warm}
            result["airbench"].update(ladder("airbench", lambda e: train_airbench(
                ab, e, device, workdir, args.smoke), ab_lengths, args.target,
                result["airbench"], save))
    print(f"ours ({recipe.model}): warming up (compile, autotune) ...", flush=True)
    ours = Ours(recipe, train, test, device, args.seed)
    result["ours"]["warmup_s"] = ours.warm_up()
    result["ours"].update(ladder("ours", ours.train, ours_lengths, args.target,
                                 result["ours"], save))

    result["complete"] = True
    ours_t = result["ours"]["time_to_target_s"]
    ab_t = (result["airbench"] or {}).get("time_to_target_s")
    result["ratio_ours_over_airbench"] = ours_t / ab_t if ours_t and ab_t else None
    print(f"\ntarget {args.target:.2f}% on {result['data']['name']} test ({len(test)} images), "
          f"{result['env']['device_name']}{' [SMOKE: tiny CPU run, figures meaningless]' if args.smoke else ''}")
    print(f"  ours     {_fmt(result['ours'])}")
    if result["airbench"]:
        print(f"  airbench {_fmt(result['airbench'])}")
    if result["ratio_ours_over_airbench"]:
        print(f"  ours / airbench wall time = {result['ratio_ours_over_airbench']:.2f}")
    save()
    print(f"wrote {out}")
    return 0


def _fmt(side: dict) -> str:
    if side["reached"]:
        return (f"{side['time_to_target_s']:8.2f} s  ({side['epochs']} epochs, "
                f"{side['accuracy']:.2f}%)")
    return f"not reached: best schedule tried ended at {side['accuracy']:.2f}%"


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())

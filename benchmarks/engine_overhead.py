"""How much of the bare training step's speed does `attncnn train` keep, on the CPU?

    python benchmarks/engine_overhead.py [--root ../shared/data/cifar10-jpeg.tar.gz]
        [--model resnet20_cifar] [--rounds 3] [--threads 2] [--json out.json]

For each setting (memory format x precision) and each of `--rounds` interleaved rounds:
- bare: the engine's training step (engine/step.py: forward, cross-entropy, backward, SGD)
  on one fixed batch of 128, as `attncnn bench` times it, over as many steps as one engine
  epoch has;
- engine: `attncnn.engine.train.train` for one epoch on a 5,000-image stratified subset of
  the CIFAR-10 JPEG copy's train split (the engine's own loader, crop + flip, metrics,
  logging, checkpoint); its `train_images_per_s` counts the steps only (not the eval).
Rounds alternate bare and engine so that load on a shared machine hits both alike. Prints
the median of each and their ratio; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch


SETTINGS = [("NCHW fp32", False, False), ("channels_last fp32", True, False),
            ("channels_last bf16", True, True)]


def bare_step_rate(model_name: str, steps: int, channels_last: bool, amp: bool) -> float:
    """The engine's own step (engine/step.py) on one fixed random batch: no loader, no
    metrics, no schedule, no logging."""
    from attncnn.engine.config import OptimConfig
    from attncnn.engine.optim import build_loss, build_optimizer
    from attncnn.engine.step import autocast_dtype, make_train_step
    from attncnn.models import create_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = create_model(model_name, num_classes=10).to(memory_format=fmt).train()
    optim = OptimConfig(nesterov=True, weight_decay=5e-4)
    step = make_train_step(net, build_optimizer(net, optim), build_loss(optim), "cpu",
                           autocast_dtype(amp))
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (128,))
    for _ in range(3):
        step(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return steps * 128 / (time.perf_counter() - t0)


def engine_rate(model_name: str, root: str, channels_last: bool, amp: bool, out: str) -> tuple[float, int]:
    from attncnn.engine.config import load_config
    from attncnn.engine.train import train

    cfg = load_config(None, [
        f"model.name={model_name}", "data.name=folder", f"data.root={root}",
        "data.val_fraction=0.9", "data.eval_split=test", "schedule.name=cosine",
        "schedule.epochs=1", "schedule.milestones=[]", "optim.nesterov=true",
        f"run.amp={str(amp).lower()}", f"run.channels_last={str(channels_last).lower()}",
        f"run.out_dir={out}", "run.tensorboard=false"])
    record = train(cfg, quiet=True)
    epoch = record["history"][0]
    steps = record["data"]["num_train"] // 128
    return epoch["train_images_per_s"], steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/cifar10-jpeg.tar.gz")
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from attncnn.engine.environment import device_name, git_state

    rows = []
    for label, cl, amp in SETTINGS:
        bare, eng = [], []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as out:
                rate, steps = engine_rate(args.model, args.root, cl, amp, f"{out}/r{r}")
            eng.append(rate)
            bare.append(bare_step_rate(args.model, steps, cl, amp))
            print(f"{label:20s} round {r + 1}: bare {bare[-1]:6.1f} img/s, engine {eng[-1]:6.1f} img/s",
                  file=sys.stderr, flush=True)
        rows.append({"setting": label, "bare_img_s": statistics.median(bare),
                     "engine_img_s": statistics.median(eng), "bare_all": bare, "engine_all": eng})
    print(f"{args.model}, batch 128, {device_name(torch.device('cpu'))}, commit "
          f"{(git_state()[0] or 'unknown')[:7]}; medians of {args.rounds} interleaved rounds")
    print(f"{'setting':20s} {'bare step':>10s} {'engine':>10s} {'engine/bare':>12s}")
    for row in rows:
        print(f"{row['setting']:20s} {row['bare_img_s']:10.1f} {row['engine_img_s']:10.1f} "
              f"{row['engine_img_s'] / row['bare_img_s']:12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "threads": torch.get_num_threads(),
                       "device": device_name(torch.device("cpu")), "commit": git_state()[0],
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

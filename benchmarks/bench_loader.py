"""Is the data path ever the bottleneck? Loader + augmentation images/s beside training images/s.

Measures, on the machine it runs on (prints, asserts nothing):
  1. loading the CIFAR-10 JPEG copy: cold decode (unless cached) and a cached load;
  2. DeviceLoader throughput on `--device`: shuffle + pad-4 crop + flip + normalise, batch 128;
  3. training throughput of `--model` (fwd + bwd + SGD step) at the same batch on the same device;
and prints the ratio loader / training: above 1 the loader keeps up.

    PYTHONPATH=src python benchmarks/bench_loader.py [--root ../shared/data/cifar10-jpeg.tar.gz]
        [--device cpu] [--model resnet110_cifar] [--train-steps 3] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from attncnn.data import DataConfig, DeviceLoader
from attncnn.data.sources import load_split
from attncnn.models import create_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(data, device, batch: int, epochs: int) -> float:
    loader = DeviceLoader(data, batch, train=True, device=device, seed=0)
    for x, _ in loader.epoch(0, start_step=len(loader) - 2):  # warm-up
        pass
    sync(device)
    start, n = time.perf_counter(), 0
    for e in range(epochs):
        for x, _ in loader.epoch(e):
            n += len(x)
    sync(device)
    return n / (time.perf_counter() - start)


def train_rate(model_name: str, data, device, batch: int, steps: int) -> float:
    model = create_model(model_name, num_classes=data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DeviceLoader(data, batch, train=True, device=device, seed=0)
    batches = loader.epoch(0)
    x, y = next(batches)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/cifar10-jpeg.tar.gz")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet110_cifar")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--loader-epochs", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    cfg = DataConfig(name="folder", root=args.root, cache_dir=args.cache_dir,
                     display_name="CIFAR-10 (JPEG q75 copy)")
    start = time.perf_counter()
    data = load_split(cfg, "train")
    first = time.perf_counter() - start
    start = time.perf_counter()
    data = load_split(cfg, "train")
    cached = time.perf_counter() - start
    print(f"data: {data.name}, {len(data)} train images {tuple(data.images.shape[1:])}")
    print(f"load train split: first call {first:.1f} s (decodes unless already cached), "
          f"cached {cached:.2f} s")

    loader = loader_rate(data, device, args.batch, args.loader_epochs)
    print(f"loader (shuffle + crop + flip + normalise, batch {args.batch}): {loader:,.0f} images/s")
    train = train_rate(args.model, data, device, args.batch, args.train_steps)
    print(f"train {args.model} (fwd + bwd + SGD, batch {args.batch}, {args.train_steps} steps): "
          f"{train:,.1f} images/s")
    print(f"ratio loader / train: {loader / train:,.0f}x "
          f"({'the loader keeps up' if loader > train else 'the LOADER is the bottleneck'})")


if __name__ == "__main__":
    main()

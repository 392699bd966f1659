"""Training throughput of our `resnet110_cifar` beside a plain reference ResNet-110, on CPU.

The reference is written here, the way the classic CIFAR ResNet code is (eager fp32, option-A
shortcut as a lambda of slicing and zero-padding), so a slowdown in our model code (the
registry, the attention hooks, the shortcut) shows as a ratio below 1. Both run in one
process with the same batch, threads, optimizer and step; timed windows alternate between
the two so that load on a shared machine hits both alike.

    PYTHONPATH=src python benchmarks/cpu_reference.py [--depth 110] [--batch-size 32]
        [--threads 1] [--steps 5 --windows 5 --warmup 2]

Prints both throughputs (images/s, median window and range) and ours / reference (the median
of the ratios of neighbouring windows), by wall clock and by the process's CPU time. With one
thread on a machine shared with other busy processes, CPU time is the steadier measure: it
leaves out the time spent waiting for a core.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class RefBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            pad = planes // 4
            self.shortcut = lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out)


class RefResNet(nn.Module):
    def __init__(self, depth=110, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(RefBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def make_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    from attncnn.engine.environment import git_state
    from attncnn.models import count_params, create_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=110)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = {"ours": create_model(f"resnet{args.depth}_cifar"), "reference": RefResNet(args.depth)}
    counts = {k: count_params(m) for k, m in models.items()}
    assert counts["ours"] == counts["reference"], f"not the same network: {counts}"
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    steps = {k: make_step(m.train()) for k, m in models.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step(x, y)
    times = {k: [] for k in models}
    cpu = {k: [] for k in models}
    for _ in range(args.windows):
        for k, step in steps.items():  # alternate: load changes hit both
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(x, y)
            images = args.batch_size * args.steps
            times[k].append(images / (time.perf_counter() - start))
            cpu[k].append(images / (time.process_time() - start_cpu))

    commit, dirty = git_state()
    print(f"resnet{args.depth}_cifar training throughput, CPU fp32 eager, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.windows} windows x {args.steps} steps after "
          f"{args.warmup} warm-up, torch {torch.__version__}, params {counts['ours']}, "
          f"commit {(commit or '?')[:7]}{' (dirty)' if dirty else ''}")
    for label, table in (("wall clock", times), ("process CPU time", cpu)):
        print(f" per {label}:")
        for k, ips in table.items():
            print(f"  {k:10s} {statistics.median(ips):8.1f} images/s  "
                  f"[{min(ips):.1f} - {max(ips):.1f}]")
        # the ratio of each pair of neighbouring windows, then the median: robust to drift
        pairs = [a / b for a, b in zip(table["ours"], table["reference"])]
        print(f"  ours / reference = {statistics.median(pairs):.3f}  (median of {len(pairs)} "
              f"paired windows, range {min(pairs):.3f} - {max(pairs):.3f}; > 1: ours faster)")


if __name__ == "__main__":
    main()

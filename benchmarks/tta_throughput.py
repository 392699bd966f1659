"""Training-step throughput of the nets in benchmarks/time_to_accuracy.py, on one device:
ResNet-9 (`attn_resnet9`, `resnet9`) at several widths beside airbench94's own network
(built by its make_net94, on the CPU with fp32 weights; bf16 autocast or fp32), and a
reference model of `attncnn bench`'s tables. What `attncnn bench` measures (the engine's
training step on one fixed random batch, channels_last, windows interleaved over the nets,
median window), for the widths and the airbench net that its registry names cannot express.

    PYTHONPATH=src python benchmarks/tta_throughput.py --threads 1 [--widths 16,24,32,48,64] \
        [--batch-size 256] [--airbench-batch 1024] [--steps 2 --windows 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attncnn.engine.config import OptimConfig  # noqa: E402
from attncnn.engine.device import cpu_has_native_bf16  # noqa: E402
from attncnn.engine.environment import environment  # noqa: E402
from attncnn.engine.optim import build_loss, build_optimizer  # noqa: E402
from attncnn.engine.results import write_json_atomic  # noqa: E402
from attncnn.engine.step import make_train_step  # noqa: E402
from attncnn.models import create_model  # noqa: E402
from attncnn.models.profile import count_macs, count_params  # noqa: E402

OPTIM = OptimConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def subjects(args) -> list[tuple[str, callable, int, torch.dtype | None]]:
    """(label, build, batch, autocast dtype) for every net to time."""
    bf16 = torch.bfloat16 if cpu_has_native_bf16() else None
    out = [(args.reference, lambda: create_model(args.reference), args.batch_size, bf16)]
    for width in (int(w) for w in args.widths.split(",") if w.strip()):
        for name in ("resnet9", "attn_resnet9"):
            out.append((f"{name} width {width}", lambda n=name, w=width: create_model(n, width=w),
                        args.batch_size, bf16))
    if not args.skip_airbench:
        from tta_airbench import AirbenchOptions, _cpu_net, import_airbench
        ab = import_airbench()
        for precision in ("bf16", "fp32") if bf16 else ("fp32",):
            out.append((f"airbench94 {precision}", lambda p=precision: _cpu_net(
                ab, AirbenchOptions(), p, smoke=False), args.airbench_batch, None))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--widths", default="16,24,32,48,64")
    p.add_argument("--batch-size", type=int, default=256, help="ours and the reference")
    p.add_argument("--airbench-batch", type=int, default=1024, help="airbench94's (its own: 1024)")
    p.add_argument("--reference", default="resnet20_cifar")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--skip-airbench", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    runs = []
    for label, build, batch, dtype in subjects(args):
        torch.manual_seed(0)
        model = build().to(memory_format=torch.channels_last).train()
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        step = make_train_step(model, build_optimizer(model, OPTIM, device), build_loss(OPTIM),
                               device, dtype)
        step(x, y)  # warm-up
        runs.append({"label": label, "batch": batch, "params": count_params(model),
                     "macs": count_macs(model, (3, 32, 32)), "step": step, "x": x, "y": y,
                     "seconds_per_image": []})
    for _ in range(args.windows):  # interleaved: a load change hits every net alike
        for run in runs:
            start = time.perf_counter()
            for _ in range(args.steps):
                run["step"](run["x"], run["y"])
            run["seconds_per_image"].append((time.perf_counter() - start) / (args.steps * run["batch"]))
    print(f"training step, CPU, {args.threads} thread(s), channels_last, {args.windows} windows x "
          f"{args.steps} steps, interleaved; images/s median [min-max]")
    rows = []
    for run in runs:
        ips = sorted(1 / s for s in run["seconds_per_image"])
        row = {"label": run["label"], "batch": run["batch"], "params": run["params"],
               "macs": run["macs"], "images_per_s": statistics.median(ips),
               "images_per_s_min": ips[0], "images_per_s_max": ips[-1]}
        rows.append(row)
        print(f"  {row['label']:24s} batch {row['batch']:4d}  {row['params'] / 1e6:6.3f}M params  "
              f"{row['macs'] / 1e6:6.1f}M MACs  {row['images_per_s']:7.1f} img/s "
              f"[{ips[0]:.0f}-{ips[-1]:.0f}]")
    if args.json:
        write_json_atomic({"schema": "attncnn.tta_throughput/1", "env": environment(device),
                           "settings": {k: v for k, v in vars(args).items() if k != "json"},
                           "rows": rows}, Path(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a tiny digits model for `attncnn explain --score` (a stand-in for `attncnn train`).

    PYTHONPATH=src python benchmarks/explain_train_digits.py MODEL STEPS OUT.safetensors [LR [OVERRIDES]]

A ResNet-8 (widths 8/16/32) of the registered family MODEL (e.g. attn_resnet20_cifar,
resnet20_cifar) on the embedded digits train split: AdamW (weight decay 5e-4), one-cycle
schedule peaking at LR (default 3e-3), batch 64, no augmentation, seed 0, one CPU thread. OVERRIDES: JSON create_model arguments, e.g.
'{"attention_placement": "end"}' or '{"attention_options": {"mode": "residual"}}'.
Prints the digits test top-1 and writes a weights file. Used for the numbers in
docs/explain.md; the engine's `attncnn train` is the real trainer.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

from attncnn.data.config import DataConfig
from attncnn.data.sources import load_split
from attncnn.inference.weights import save_weights
from attncnn.models import create_model

BATCH = 64
SEED = 0


def main(name: str, steps: int, out: str, lr: float = 3e-3, overrides: dict | None = None) -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # on a shared, loaded CPU one thread was ~10x faster than two
    train = load_split(DataConfig(name="digits"), "train")
    test = load_split(DataConfig(name="digits"), "test")
    mean = torch.tensor(train.mean).view(1, 3, 1, 1)
    std = torch.tensor(train.std).view(1, 3, 1, 1)

    def normalise(u8):
        return (u8.float() / 255 - mean) / std

    args = {"depth": 8, "widths": (8, 16, 32), **(overrides or {})}
    model = create_model(name, num_classes=10, **args)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    order = torch.Generator().manual_seed(SEED)
    start, step = time.time(), 0
    model.train()
    while step < steps:
        perm = torch.randperm(len(train), generator=order)
        for i in range(0, len(perm) - BATCH + 1, BATCH):
            if step >= steps:
                break
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(normalise(train.images[idx])), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{steps} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test), 500):
            pred = model(normalise(test.images[i:i + 500])).argmax(1)
            correct += int((pred == test.labels[i:i + 500]).sum())
    top1 = 100 * correct / len(test)
    epochs = round(steps * BATCH / len(train), 2)
    print(f"{name}: test top1 {top1:.2f}% after {steps} steps ({epochs} epochs), "
          f"{time.time() - start:.0f}s", flush=True)
    save_weights(out, model, classes=train.classes, mean=train.mean, std=train.std,
                 input_size=(3, 32, 32),
                 summary={"trainer": "benchmarks/explain_train_digits.py", "steps": steps,
                          "epochs": epochs, "seed": SEED, "batch_size": BATCH,
                          "optimizer": f"AdamW lr {lr} wd 5e-4 one-cycle", "test_top1": top1})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 3e-3,
         json.loads(sys.argv[5]) if len(sys.argv) > 5 else None)

"""A tiny in-memory data set and config for the engine tests (seconds on a laptop CPU).

`toy_source`: 4 classes of 16x16 images, the class being the quadrant that holds a bright
square, on noise; registered as data source "engine_toy".
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from attncnn.data import ArrayDataset, register_source
from attncnn.engine.config import config_from_dict

SOURCE = "engine_toy"


def make_toy(n: int, seed: int, size: int = 16) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 90, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 4
    half = size // 2
    for i, c in enumerate(labels.tolist()):
        y0, x0 = (c // 2) * half, (c % 2) * half
        dy, dx = torch.randint(0, half - 4, (2,), generator=g).tolist()
        images[i, :, y0 + dy: y0 + dy + 4, x0 + dx: x0 + dx + 4] = 230
    return ArrayDataset(images, labels, ["tl", "tr", "bl", "br"], name="engine toy quadrants")


@register_source(SOURCE)
def toy_source(cfg, split):
    return make_toy(64 if split == "train" else 24, seed=0 if split == "train" else 1)


def toy_config(tmp_path, **sections):
    """A Config for a ~1k-parameter ResNet-8 on the toy data; `sections` update it,
    e.g. run={"checkpoint_every_steps": 3}."""
    raw = {
        "model": {"name": "attn_resnet20_cifar",
                  "args": {"depth": 8, "widths": [4, 8, 8]}},
        "data": {"name": SOURCE, "batch_size": 16, "eval_batch_size": 16, "crop_padding": 2},
        "optim": {"lr": 0.05},
        "schedule": {"name": "step", "epochs": 3, "milestones": [2]},
        "run": {"out_dir": str(tmp_path), "name": "toy", "tensorboard": False},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw, source="toy")


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run far faster on one thread on a busy 2-core machine (no spin-waits);
    torch's thread count is process-wide, so the caller's is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


"""The airbench side of benchmarks/time_to_accuracy.py: airbench's own train94 (network,
recipe, loader, TTA) fed the same decoded images through the train.pt/test.pt files its
CifarLoader reads, and, for --smoke, the mapping of its hard-coded CUDA onto the CPU.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from attncnn.data.dataset import ArrayDataset
from attncnn.engine.device import synchronize


def write_airbench_files(train: ArrayDataset, test: ArrayDataset, workdir: Path) -> None:
    """airbench's CifarLoader reads `cifar10/{train,test}.pt`: uint8 [N, 32, 32, 3] + labels."""
    (workdir / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("test", test)):
        torch.save({"images": data.images.permute(0, 2, 3, 1).contiguous(),
                    "labels": data.labels.clone(), "classes": list(data.classes)},
                   workdir / "cifar10" / f"{split}.pt")


def import_airbench(smoke: bool = False):
    if smoke:
        _torchvision_or_stand_in()
    try:
        import airbench
    except Exception as err:  # noqa: BLE001  a torchvision built for another torch raises RuntimeError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SystemExit(f"time_to_accuracy: airbench is not importable ({first}); "
                         "`pip install airbench torchvision` (torchvision matching your torch)")
    return airbench


def _torchvision_or_stand_in() -> None:
    """--smoke only. PyPI's torchvision does not load beside a CPU-only torch wheel, and
    airbench imports it for one thing once its data files exist: transforms.Normalize. Put a
    stand-in with that alone in its place, so the smoke run still exercises airbench's code."""
    import types

    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # noqa: BLE001  ImportError, or RuntimeError from a mismatched build
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]

    class Normalize(torch.nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
            self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

        def forward(self, x):
            return (x - self.mean.to(x)) / self.std.to(x)

    vision = types.ModuleType("torchvision")
    vision.transforms = types.ModuleType("torchvision.transforms")
    vision.transforms.Normalize = Normalize
    vision.datasets = types.ModuleType("torchvision.datasets")  # never reached: files exist
    sys.modules.update({"torchvision": vision, "torchvision.transforms": vision.transforms,
                        "torchvision.datasets": vision.datasets})


def train_airbench(ab, epochs: float, device: torch.device, workdir: Path,
                   smoke: bool = False) -> dict:
    """airbench.train94 for `epochs` on the files in `workdir`; accuracy with its TTA."""
    hyp = ab.lib_airbench94.hyp
    gpu = device.index or 0 if device.type == "cuda" else "cpu"
    with _chdir(workdir):  # its train() opens cifar10/test.pt relative to the working dir
        loader = ab.CifarLoader("cifar10", train=True, batch_size=_ab_batch(hyp, smoke),
                                aug=hyp["aug"], altflip=True, gpu=gpu)
        test_loader = ab.CifarLoader("cifar10", train=False, batch_size=2000, gpu=gpu)
        synchronize(device)
        start = time.perf_counter()
        model = ab.train94(train_loader=loader, epochs=epochs, verbose=False)
        synchronize(device)
        train_s = time.perf_counter() - start
        accuracy = 100.0 * ab.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
        synchronize(device)
        total_s = time.perf_counter() - start
    return {"epochs": epochs, "accuracy": accuracy, "train_s": train_s,
            "eval_s": total_s - train_s, "time_s": total_s}


def _ab_batch(hyp: dict, smoke: bool) -> int:
    return 16 if smoke else hyp["opt"]["batch_size"]


def warm_up_airbench(ab, device, workdir: Path, smoke: bool) -> float:
    start = time.perf_counter()
    train_airbench(ab, 0.2 if not smoke else 1, device, workdir, smoke)
    return time.perf_counter() - start


@contextlib.contextmanager
def _chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def airbench_on_cpu(ab):
    """--smoke only: airbench hard-codes CUDA (`net.cuda()`, CUDA events, loaders on GPU 0);
    map those to the CPU, and narrow its net (base width 8), so its real training code runs
    a few steps here."""
    class CpuEvent:
        def __init__(self, *a, **k):
            self.t = 0.0

        def record(self):
            self.t = time.perf_counter()

        def elapsed_time(self, end):
            return 1e3 * (end.t - self.t)

    base = ab.utils.CifarLoader

    class CpuLoader(base):
        def __init__(self, *args, **kwargs):
            kwargs["gpu"] = "cpu"
            super().__init__(*args, **kwargs)

    with mock.patch.object(torch.nn.Module, "cuda", lambda self, *a, **k: self), \
            mock.patch.dict(ab.lib_airbench94.hyp["net"], {"base_width": 8}), \
            mock.patch.object(torch.cuda, "Event", CpuEvent), \
            mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None), \
            mock.patch.object(ab.utils, "CifarLoader", CpuLoader):
        yield

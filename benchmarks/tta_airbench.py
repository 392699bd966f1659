"""The airbench side of benchmarks/time_to_accuracy.py: airbench's own train94 (network,
recipe, loader, TTA) fed the same decoded images through the train.pt/test.pt files its
CifarLoader reads; on the CPU, its hard-coded CUDA mapped to the CPU; and the ablation
switches that say which of its ingredients buy its speed (`AirbenchOptions`).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from unittest import mock

import torch
import yaml

from attncnn.data.dataset import ArrayDataset
from attncnn.engine.device import cpu_has_native_bf16, synchronize

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class AirbenchOptions:
    """How airbench94 runs. The defaults are airbench's own recipe; the rest are ablations.

    precision: CPU only. auto = bf16 autocast where the CPU computes bf16 natively (the CPU's
        counterpart of airbench's fp16 on a GPU), else fp32; the net's weights stay fp32.
        On a GPU airbench runs its own fp16 and only auto is accepted.
    batch_size: its loader's batch (None: its 1024); its lr and weight decay are per 1024
        examples (decoupled), so another batch keeps the step size per example.
    tta_level: 0 none, 1 mirror, 2 mirror + translate (None: its 2).
    lookahead: its lookahead/EMA of the weights every 5 steps (False: plain SGD weights).
    whiten: its patch-whitening init of the frozen first conv (False: that conv keeps its
        default init and trains like the others).
    widths: its three blocks' widths (None: 64, 256, 256)."""
    precision: str = "auto"
    batch_size: int | None = None
    tta_level: int | None = None
    lookahead: bool = True
    whiten: bool = True
    widths: tuple | None = None

    def with_overrides(self, items: list[str]) -> "AirbenchOptions":
        names = {f.name for f in fields(self)}
        changes = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep or key.strip() not in names:
                raise SystemExit(f"time_to_accuracy: --airbench-set wants KEY=VALUE with KEY one "
                                 f"of {', '.join(sorted(names))}; got {item!r}")
            value = yaml.safe_load(text)
            changes[key.strip()] = tuple(value) if isinstance(value, list) else value
        out = replace(self, **changes)
        if out.precision not in PRECISIONS:
            raise SystemExit(f"time_to_accuracy: airbench precision must be one of {PRECISIONS}")
        return out

    def record(self, device: torch.device) -> dict:
        """The options as run, with `precision` resolved for `device`."""
        return {**asdict(self), "precision": resolve_precision(self.precision, device)}


def resolve_precision(precision: str, device: torch.device) -> str:
    if device.type != "cpu":
        if precision != "auto":
            raise SystemExit("time_to_accuracy: on a GPU airbench runs its own fp16 "
                             "(precision=auto only)")
        return "fp16 (airbench's own)"
    if precision == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return precision


def write_airbench_files(train: ArrayDataset, test: ArrayDataset, workdir: Path) -> None:
    """airbench's CifarLoader reads `cifar10/{train,test}.pt`: uint8 [N, 32, 32, 3] + labels."""
    (workdir / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("test", test)):
        torch.save({"images": data.images.permute(0, 2, 3, 1).contiguous(),
                    "labels": data.labels.clone(), "classes": list(data.classes)},
                   workdir / "cifar10" / f"{split}.pt")


def import_airbench():
    """airbench, with a stand-in for torchvision where that does not load (see below)."""
    _torchvision_or_stand_in()
    try:
        import airbench
    except Exception as err:  # noqa: BLE001  a broken install raises anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SystemExit(f"time_to_accuracy: airbench is not importable ({first}); "
                         "`pip install airbench` (0.1.8)")
    return airbench


def torchvision_used() -> str:
    vision = sys.modules.get("torchvision")
    return "stand-in (transforms.Normalize only)" if getattr(vision, "STAND_IN", False) else \
        f"torchvision {getattr(vision, '__version__', '?')}"


def _torchvision_or_stand_in() -> None:
    """PyPI's torchvision does not load beside a CPU-only torch wheel, and airbench imports it
    for one thing once its data files exist: transforms.Normalize (datasets.CIFAR10 is only
    reached for a download, which never happens here). Where torchvision does not load, put
    a stand-in with that alone in its place, so airbench's own code still runs."""
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
    vision.STAND_IN = True
    vision.transforms = types.ModuleType("torchvision.transforms")
    vision.transforms.Normalize = Normalize
    vision.datasets = types.ModuleType("torchvision.datasets")  # never reached: files exist
    sys.modules.update({"torchvision": vision, "torchvision.transforms": vision.transforms,
                        "torchvision.datasets": vision.datasets})


def train_airbench(ab, epochs: float, device: torch.device, workdir: Path,
                   options: AirbenchOptions, smoke: bool = False, seed: int | None = None) -> dict:
    """airbench.train94 for `epochs` on the files in `workdir`; accuracy with its TTA.
    airbench draws its initialisation, shuffling and augmentation from torch's global
    generator and seeds nothing itself: `seed` seeds that generator first (None: as it is)."""
    hyp = ab.lib_airbench94.hyp
    batch = 16 if smoke else options.batch_size or hyp["opt"]["batch_size"]
    tta = hyp["net"]["tta_level"] if options.tta_level is None else options.tta_level
    precision = resolve_precision(options.precision, device)
    if seed is not None:
        torch.manual_seed(seed)
    with _chdir(workdir), _ablations(ab, options):  # its train() opens cifar10/test.pt here
        if device.type == "cpu":
            ctx = _on_cpu(ab)
            gpu, make_net = "cpu", lambda: _cpu_net(ab, options, precision, smoke)
        else:
            ctx, gpu = contextlib.nullcontext(), device.index or 0
            make_net = lambda: _gpu_net(ab, options)  # noqa: E731
        with ctx:
            loader_cls = ab.utils.CifarLoader  # the CPU one inside _on_cpu
            loader = loader_cls("cifar10", train=True, batch_size=batch, aug=hyp["aug"],
                                altflip=True, gpu=gpu)
            test_loader = loader_cls("cifar10", train=False, batch_size=2000, gpu=gpu)
            synchronize(device)
            start = time.perf_counter()
            model = ab.train94(train_loader=loader, epochs=epochs, make_net=make_net,
                               verbose=False)
            synchronize(device)
            train_s = time.perf_counter() - start
            accuracy = 100.0 * ab.evaluate(model, test_loader, tta_level=tta)
            synchronize(device)
            total_s = time.perf_counter() - start
    steps = math.ceil(len(loader) * epochs)
    return {"epochs": epochs, "steps": steps, "seed": seed, "accuracy": accuracy, "train_s": train_s,
            "eval_s": total_s - train_s, "time_s": total_s,
            "images_per_s": steps * batch / train_s}


def warm_up_airbench(ab, device, workdir: Path, options: AirbenchOptions, smoke: bool) -> float:
    start = time.perf_counter()
    train_airbench(ab, 0.2 if not smoke else 1, device, workdir, options, smoke)
    return time.perf_counter() - start


def _widths(ab, options: AirbenchOptions, smoke: bool) -> dict:
    widths = dict(ab.lib_airbench94.hyp["net"]["widths"])
    if options.widths:
        widths = dict(zip(("block1", "block2", "block3"), options.widths))
    return {k: 8 for k in widths} if smoke else widths


def _gpu_net(ab, options: AirbenchOptions):
    net = ab.lib_airbench94.make_net94(widths=_widths(ab, options, False))
    net[0].weight.requires_grad = not options.whiten  # no whitening: the first conv trains
    return net


def _cpu_net(ab, options: AirbenchOptions, precision: str, smoke: bool):
    """make_net94 with its `.half().cuda()` left out: fp32 weights on the CPU (BatchNorm is
    fp32 in airbench anyway); with bf16, its forward runs under CPU autocast and returns
    fp32 logits (so its loss is summed in fp32, as on a GPU where the loss is fp32)."""
    identity = lambda self, *a, **k: self  # noqa: E731
    with mock.patch.object(torch.nn.Module, "cuda", identity), \
            mock.patch.object(torch.nn.Module, "half", identity):
        net = ab.lib_airbench94.make_net94(widths=_widths(ab, options, smoke))
    net[0].weight.requires_grad = not options.whiten
    if precision == "bf16":
        net.__class__ = _Bf16Sequential  # same modules and parameter names, net[0] still works
    return net


class _Bf16Sequential(torch.nn.Sequential):
    """airbench's nn.Sequential net, its forward under CPU bf16 autocast, fp32 logits out."""

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x).float()


@contextlib.contextmanager
def _ablations(ab, options: AirbenchOptions):
    class NoLookahead:
        def __init__(self, net):
            pass

        def update(self, net, decay):
            pass

    with contextlib.ExitStack() as stack:
        if not options.lookahead:
            stack.enter_context(mock.patch.object(ab.utils, "LookaheadState", NoLookahead))
        if not options.whiten:
            stack.enter_context(mock.patch.object(ab.utils, "init_whitening_conv",
                                                  lambda layer, images, eps=5e-4: None))
        yield


@contextlib.contextmanager
def _chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _on_cpu(ab):
    """airbench hard-codes CUDA: CUDA events and synchronize for its own timer, loaders on
    GPU 0 (including the test loader its train() makes). Map those to the CPU; its loader
    keeps fp32 images there (it makes fp16 ones for the GPU's half-precision net)."""
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
            self.images = self.images.float()

    with mock.patch.object(torch.cuda, "Event", CpuEvent), \
            mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None), \
            mock.patch.object(ab.utils, "CifarLoader", CpuLoader):
        yield

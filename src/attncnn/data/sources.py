"""Named data sources and `build_loaders`, the one entry point the training engine uses.

A source is a function `(cfg: DataConfig, split: str) -> ArrayDataset` registered under a
name with `@register_source("name")`. Large-image sources register with `streaming=True`
and build the `Loaders` themselves instead: `(cfg, *, device, rank, world_size,
channels_last, run_seed) -> Loaders`, whose loaders are `BatchLoader`s (attncnn.data.loader)
and whose training loader is seeded with `train_seed(cfg.seed, run_seed)`, as
`build_loaders` seeds a `DeviceLoader`. A source with a fixed set of splits names them
(`splits=("train", "test")`), so a config can be checked before any data is read;
folder-like sources, whose splits are folder names, do not.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from attncnn.data.config import DataConfig
from attncnn.data.crops import centre_view
from attncnn.data.dataset import ArrayDataset
from attncnn.data.loader import BatchLoader, DeviceLoader, train_seed
from attncnn.errors import AttncnnError, did_you_mean


class _Source(NamedTuple):
    fn: Callable
    streaming: bool
    splits: tuple[str, ...] | None   # None: any name (a folder per split)


_SOURCES: dict[str, _Source] = {}


def register_source(name: str, streaming: bool = False, splits: tuple[str, ...] | None = None):
    def wrap(fn):
        _SOURCES[name] = _Source(fn, streaming, splits)
        return fn
    return wrap


def source_names() -> list[str]:
    _import_builtin_sources()
    return sorted(_SOURCES)


def _get_source(name: str) -> _Source:
    _import_builtin_sources()
    if name not in _SOURCES:
        raise AttncnnError(f"unknown data set {name!r}{did_you_mean(name, _SOURCES, n=3)} "
                           f"(known: {', '.join(sorted(_SOURCES))})")
    return _SOURCES[name]


def is_streaming(name: str) -> bool:
    """Whether source `name` streams from disk (ImageNet) instead of decoding into memory."""
    return _get_source(name).streaming


def source_splits(name: str) -> tuple[str, ...] | None:
    """The split names source `name` has, or None where any name may do (folders) or no
    source of that name is registered (it is reported when the data is loaded)."""
    _import_builtin_sources()
    source = _SOURCES.get(name)
    return None if source is None else source.splits


def _import_builtin_sources() -> None:
    """Readers register themselves on import."""
    import importlib

    for module in ("digits", "cifar", "folder", "imagenet"):
        importlib.import_module(f"attncnn.data.{module}")


def load_split(cfg: DataConfig, split: str) -> ArrayDataset:
    """The decoded `split` of a small-image source. With data.val_fraction > 0, "val" is
    the share held out of train (and "train" the rest), even where a folder has a split
    named "val"; with val_fraction 0, "val" is a folder source's own "val" folder (as in
    Imagenette), and an error for sources with fixed splits."""
    fn, streaming, fixed_splits = _get_source(cfg.name)
    if streaming:
        raise AttncnnError(f"data set {cfg.name!r} streams from disk; it has no in-memory split")
    if split in ("val", "train") and cfg.val_fraction > 0:
        train, val = split_validation(fn(cfg, cfg.train_split), cfg.val_fraction, cfg.seed)
        return val if split == "val" else train
    if split == "val" and fixed_splits is not None:
        raise AttncnnError("eval_split 'val' needs data.val_fraction > 0 (a share of train held out)")
    return fn(cfg, split)


def split_validation(data: ArrayDataset, fraction: float, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Stratified, seeded hold-out: `fraction` of each class goes to validation."""
    if not 0 < fraction < 1:
        raise AttncnnError(f"val_fraction must be in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(10_007 + seed)
    train_idx, val_idx = [], []
    for c in range(data.num_classes):
        idx = (data.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = int(round(len(idx) * fraction))
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return data.subset(torch.cat(train_idx).sort().values), data.subset(torch.cat(val_idx).sort().values)


def train_subset(data: ArrayDataset, size: int | float, seed: int) -> ArrayDataset:
    """A stratified, seeded subset of `data` (data.train_subset): `size` images (an int)
    or that share of them (a float in (0, 1]), each class keeping its share of the total
    (largest remainders round), chosen at random by `seed` (data.seed)."""
    n = len(data)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or \
            (isinstance(size, int) and size < 1) or (isinstance(size, float) and not 0 < size <= 1):
        raise AttncnnError(f"data.train_subset must be a count >= 1 or a fraction in (0, 1], "
                           f"got {size!r}")
    target = size if isinstance(size, int) else int(round(n * size))
    if target > n:
        raise AttncnnError(f"data.train_subset={size} is more than the {n} training images "
                           f"of {data.name or 'the data'}")
    if target < 1:
        raise AttncnnError(f"data.train_subset={size} of {n} training images selects none")
    counts = torch.bincount(data.labels, minlength=data.num_classes).tolist()
    exact = [c * target / n for c in counts]
    quota = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda c: (quota[c] - exact[c], c))
    for c in by_remainder[: target - sum(quota)]:
        quota[c] += 1
    gen = torch.Generator().manual_seed(20_011 + seed)
    keep = []
    for c, k in enumerate(quota):
        idx = (data.labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)][:k])
    return data.subset(torch.cat(keep).sort().values)


@dataclass
class Loaders:
    train: BatchLoader       # a DeviceLoader, or a streaming source's loader
    eval: BatchLoader
    classes: list[str]
    name: str                # how results name the data, e.g. "CIFAR-10 (JPEG q75 copy)"
    mean: tuple
    std: tuple
    input_size: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_loaders(cfg: DataConfig, device: torch.device | str = "cpu", rank: int = 0,
                  world_size: int = 1, channels_last: bool = False, *, run_seed: int = 0) -> Loaders:
    """Train and eval loaders for `cfg` on `device`, sharded for rank `rank` of `world_size`.

    run_seed: the run's seed (run.seed); the training loader's order and augmentation follow
    `train_seed(cfg.seed, run_seed)`. The eval loader neither shuffles nor augments.
    """
    fn, streaming, _ = _get_source(cfg.name)
    if streaming:
        return fn(cfg, device=device, rank=rank, world_size=world_size,
                  channels_last=channels_last, run_seed=run_seed)
    train = load_split(cfg, cfg.train_split)
    if cfg.train_subset is not None:  # after any val hold-out, which keeps its share of all
        train = train_subset(train, cfg.train_subset, cfg.seed)
    evaluation = eval_input(load_split(cfg, cfg.eval_split), cfg)
    if not cfg.augment:             # whole training images, seen as evaluation sees them
        train = eval_input(train, cfg)
    if train.classes != evaluation.classes:
        raise AttncnnError(f"{cfg.name}: train and {cfg.eval_split} splits have different classes")
    # One normalisation for both: a model is evaluated on the inputs it was trained on.
    evaluation = dataclasses.replace(evaluation, mean=train.mean, std=train.std)
    common = dict(device=device, rank=rank, world_size=world_size, channels_last=channels_last)
    return Loaders(
        train=DeviceLoader(train, cfg.batch_size, train=True, seed=train_seed(cfg.seed, run_seed),
                           augment=cfg.augment, crop_padding=cfg.crop_padding, flip=cfg.flip,
                           pad_mode=cfg.pad_mode,
                           train_crop=cfg.train_crop, crop_size=cfg.crop_size,
                           crop_scale=cfg.crop_scale, **common),
        eval=DeviceLoader(evaluation, cfg.eval_batch_size, train=False, seed=cfg.seed, **common),
        classes=list(train.classes), name=train.name or cfg.name,
        mean=tuple(train.mean), std=tuple(train.std),
        input_size=(3, *evaluation.images.shape[2:]),
    )


def eval_input(data: ArrayDataset, cfg: DataConfig) -> ArrayDataset:
    """`data` as evaluation shows it to the model: with random-resized training crops, each
    image's centre crop_size square after resizing its shorter side to crop_size /
    eval_crop_ratio (attncnn.data.crops.centre_view); otherwise as decoded."""
    if cfg.train_crop != "random_resized":
        return data
    return centre_view(data, cfg.crop_size or data.images.shape[-1], cfg.eval_crop_ratio)

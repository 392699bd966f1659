"""Batches made on the training device: the data set lives there as uint8, augmentation is a
few batched tensor ops (random crop from a zero-padded image, horizontal flip, normalise),
no per-sample Python and no DataLoader workers (the airbench way).

Order and augmentation are pure functions of (seed, epoch, step): a run resumed at step k
of an epoch sees exactly the batches an uninterrupted run would, and with N ranks each rank
takes its slice of the same global batch, so the union equals the one-process batch.
"""
from __future__ import annotations

from typing import Iterator

import torch

from attncnn.data.dataset import ArrayDataset


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, gen: torch.Generator,
                     part: slice | None = None, global_size: int | None = None) -> torch.Tensor:
    """Random translation by up to `padding` px (zero fill) and horizontal flip, batched.

    images uint8 [B, 3, H, W] on any device. The draws are made on the CPU from `gen` for a
    global batch of `global_size` (default B) and rows `part` of them are used, so each rank
    of a distributed run augments its share exactly as one process would.
    """
    b, _, h, w = images.shape
    total = global_size or b
    part = part or slice(0, b)
    dy = torch.randint(0, 2 * padding + 1, (total,), generator=gen)[part].to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (total,), generator=gen)[part].to(images.device)
    mirror = (torch.rand(total, generator=gen) < 0.5)[part].to(images.device)
    if not flip:
        mirror = torch.zeros_like(mirror)
    c = images.shape[1]
    padded = torch.nn.functional.pad(images, (padding,) * 4)                   # [B, C, H+2p, W+2p]
    rows = dy[:, None] + torch.arange(h, device=images.device)                 # [B, H]
    cols = dx[:, None] + torch.arange(w, device=images.device)                 # [B, W]
    cols = torch.where(mirror[:, None], cols.flip(1), cols)
    # two 1-D gathers (rows, then columns): cheaper than one 4-D advanced index
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class DeviceLoader:
    """Iterates an `ArrayDataset` in batches of normalised float tensors on `device`.

    train=True: shuffled each epoch, drop_last, crop+flip when `augment`.
    train=False: in order, every sample once, no augmentation.
    `batch_size` is the global batch; rank r of `world_size` yields its 1/world_size share.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, *, train: bool,
                 device: torch.device | str = "cpu", seed: int = 0, augment: bool = True,
                 crop_padding: int = 4, flip: bool = True, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if train and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must divide evenly over {world_size} ranks")
        self.data = data
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment, self.crop_padding, self.flip = augment and train, crop_padding, flip
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.mean = torch.tensor(data.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(data.std, device=self.device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.labels)
        if self.train:
            return n // self.batch_size
        mine = len(range(self.rank, n, self.world_size))
        return -(-mine // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        if self.train:
            return len(self) * self.batch_size // self.world_size
        return len(range(self.rank, len(self.labels), self.world_size))

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float [b, 3, H, W], y int64 [b]) for steps start_step.. of `epoch`."""
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=_generator(self.seed, epoch))
            local = self.batch_size // self.world_size
            for step in range(start_step, len(self)):
                lo = step * self.batch_size + self.rank * local
                index = order[lo: lo + local].to(self.device)
                yield self._batch(index, epoch, step, slice(self.rank * local, (self.rank + 1) * local))
        else:
            mine = torch.arange(self.rank, n, self.world_size)
            for step in range(start_step, len(self)):
                index = mine[step * self.batch_size: (step + 1) * self.batch_size].to(self.device)
                yield self._batch(index, epoch, step, None)

    def __iter__(self):
        return self.epoch(0)

    def _batch(self, index, epoch, step, offsets):
        images = self.images[index]
        if self.augment:
            gen = _generator(self.seed, epoch, step, 7)
            images = random_crop_flip(images, self.crop_padding, self.flip, gen,
                                      offsets, self.batch_size)
        x = (images.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[index]


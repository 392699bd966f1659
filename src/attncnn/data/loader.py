"""Batches made on the training device: the data set lives there as uint8, augmentation is a
few batched tensor ops (random crop from a zero-padded image, or ImageNet's random-resized
crop (attncnn.data.crops); horizontal flip; normalise), no per-sample Python and no
DataLoader workers (the airbench way).

Order and augmentation are pure functions of (seed, epoch, step): a run resumed at step k
of an epoch sees exactly the batches an uninterrupted run would, and with N ranks each rank
takes its slice of the same global batch, so the union equals the one-process batch.
They are drawn on the CPU for a whole epoch at its start and reach the device in one copy;
a step only slices device tensors, so the step loop never copies to the device or waits
for it.
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch
import torch.nn.functional as F

from attncnn.data.crops import random_boxes, resized_crops
from attncnn.data.dataset import ArrayDataset

TRAIN_CROPS = ("pad", "random_resized")


class BatchLoader(Protocol):
    """What every loader offers (`DeviceLoader`; imagenet's `StreamingLoader`), and all the
    engine reads from one.

    seed: fixes the order and augmentation, given at construction (`train_seed`).
    num_samples: images in the split, every rank's, before any batch is dropped.
    num_samples_per_rank: images this rank sees per epoch (train: whole global batches only,
        each rank its share; eval: every image once, strided over the ranks).
    len(loader): steps per epoch on this rank.
    epoch(e, start_step): this rank's (x float [b, 3, H, W], y int64 [b]) on its device, for
        steps start_step.. of epoch e.
    """

    @property
    def seed(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    @property
    def num_samples_per_rank(self) -> int: ...

    def __len__(self) -> int: ...

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def train_seed(data_seed: int, run_seed: int) -> int:
    """The seed of a training loader's order and augmentation. data.seed alone fixes the data
    (held-out split, subset, generated sets); the batch order and augmentation also follow
    run.seed, so seed sweeps vary them as well as the initial weights."""
    return data_seed + 1000 * run_seed


def seeded_generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def batches_per_epoch(n: int, batch_size: int, *, train: bool, rank: int, world_size: int) -> int:
    """Steps in an epoch of `n` samples: train, whole global batches (drop_last), each rank
    taking batch_size / world_size of each; eval, rank r's strided share r, r+N, ... in
    batches of batch_size (the last one short)."""
    if train:
        return n // batch_size
    return -(-len(range(rank, n, world_size)) // batch_size)


def samples_per_epoch(n: int, batch_size: int, *, train: bool, rank: int, world_size: int) -> int:
    """Samples rank `rank` sees per epoch of `n` samples (see `batches_per_epoch`)."""
    if train:
        return n // batch_size * batch_size // world_size
    return len(range(rank, n, world_size))


def normalisation(mean, std, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) [1, 3, 1, 1] on `device`, in uint8 pixel units (x 255), for
    (images.float() - mean) / std."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
            torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)


def crop_flip(padded: torch.Tensor, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              mirror: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Windows of a zero-padded image set: image index[i] from row dy[i], column dx[i],
    mirrored left-right where mirror[i].

    padded uint8 [N, C, H+2p, W+2p] (contiguous); index, dy, dx int64 [B], dy and dx in
    [0, 2p]; mirror bool [B]; size (H, W). Returns uint8 [B, C, H, W] on padded's device.
    """
    _, c, padded_h, padded_w = padded.shape
    h, w = size
    dev = padded.device
    # Each output row is one whole row of the padded set, so the rows are copied with one
    # index_select and the columns picked with one gather: on a CPU about 4x faster than
    # gathering rows over whole padded images.
    planes = index[:, None] * c + torch.arange(c, device=dev)                      # [B, C]
    rows = planes[:, :, None] * padded_h + dy[:, None, None] + torch.arange(h, device=dev)
    picked = padded.view(-1, padded_w).index_select(0, rows.flatten())             # [B*C*H, W+2p]
    cols = dx[:, None] + torch.arange(w, device=dev)                               # [B, W]
    cols = torch.where(mirror[:, None], cols.flip(1), cols)
    picked = picked.view(len(index), c, h, padded_w)
    return picked.gather(3, cols[:, None, None, :].expand(-1, c, h, -1))


class ShardedCounts:
    """Steps and per-rank samples of a loader, from its `num_samples`, `batch_size`, `train`,
    `rank` and `world_size` (the rule of `batches_per_epoch`), for every loader alike."""

    batch_size: int
    train: bool
    rank: int
    world_size: int

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return batches_per_epoch(self.num_samples, self.batch_size, train=self.train,
                                 rank=self.rank, world_size=self.world_size)

    @property
    def num_samples_per_rank(self) -> int:
        """Images this rank sees per epoch."""
        return samples_per_epoch(self.num_samples, self.batch_size, train=self.train,
                                 rank=self.rank, world_size=self.world_size)


class DeviceLoader(ShardedCounts):
    """Iterates an `ArrayDataset` in batches of normalised float tensors on `device`.

    train=True: shuffled each epoch, drop_last, crop+flip when `augment`: train_crop "pad"
        crops the image's size from the image padded by crop_padding (pad_mode "zeros", as
        torchvision's RandomCrop, or "reflect", as airbench); "random_resized"
        resizes a random box of crop_scale of the area to crop_size x crop_size.
    train=False: in order, every sample once, no augmentation.
    `batch_size` is the global batch; rank r of `world_size` yields its 1/world_size share.
    A `BatchLoader`; `data` is the ArrayDataset it batches.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, *, train: bool,
                 device: torch.device | str = "cpu", seed: int = 0, augment: bool = True,
                 crop_padding: int = 4, flip: bool = True, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, train_crop: str = "pad",
                 crop_size: int | None = None, crop_scale: tuple[float, float] = (0.08, 1.0),
                 pad_mode: str = "zeros"):
        if train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop must be one of {TRAIN_CROPS}, got {train_crop!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pad_mode not in ("zeros", "reflect"):
            raise ValueError(f"pad_mode must be zeros or reflect, got {pad_mode!r}")
        if train and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must divide evenly over {world_size} ranks")
        self.data = data
        self.device = torch.device(device)
        self.batch_size, self.train, self._seed = batch_size, train, seed
        self.augment, self.crop_padding, self.flip = augment and train, crop_padding, flip
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.resized = self.augment and train_crop == "random_resized"
        self.crop_scale = tuple(crop_scale)
        self.size = tuple(data.images.shape[-2:])
        if self.resized:
            self.size = (crop_size or self.size[0],) * 2
        # Padded once, on the host, so that only the padded copy reaches the device (CIFAR
        # train: 50k x 3 x 40 x 40 uint8 = 240 MB) and a batch's crop is a row copy + a gather.
        pad = crop_padding if self.augment and not self.resized else 0
        mode = "constant" if pad_mode == "zeros" else "reflect"
        images = F.pad(data.images, (pad,) * 4, mode=mode) if pad else data.images
        self.images = images.contiguous().to(self.device)   # uint8 [N, 3, H+2p, W+2p]
        self.labels = data.labels.to(self.device)
        self.mean, self.std = normalisation(data.mean, data.std, self.device)

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def num_samples(self) -> int:
        """Images in the data set, every rank's."""
        return len(self.labels)

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float [b, 3, H, W], y int64 [b]) for steps start_step.. of `epoch`."""
        if self.train:
            plan, boxes = self._train_plan(epoch, start_step)
            for step, (index, dy, dx, mirror) in enumerate(plan):
                if self.resized:
                    pixels = resized_crops(self.images[index], boxes[step], mirror.bool(),
                                           self.size[0])
                    yield self._normalise(pixels), self.labels[index]
                    continue
                if self.augment:
                    images = crop_flip(self.images, index, dy, dx, mirror.bool(), self.size)
                else:
                    images = self.images[index]
                yield self._normalise(images), self.labels[index]
        else:
            mine = torch.arange(self.rank, len(self.labels), self.world_size, device=self.device)
            for step in range(start_step, len(self)):
                index = mine[step * self.batch_size: (step + 1) * self.batch_size]
                yield self._normalise(self.images[index]), self.labels[index]

    def __iter__(self):
        return self.epoch(0)

    def _train_plan(self, epoch: int, start_step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """int64 [steps, 4, batch_size / world_size] on the device: this rank's (index, dy,
        dx, mirror) for each step start_step.. of `epoch`, drawn on the CPU in one go and
        sent in one copy (pinned and asynchronous on CUDA, so the host does not wait); and,
        for random-resized crops, float [steps, batch_size / world_size, 4] boxes, else None."""
        gen = seeded_generator(self._seed, epoch)
        order = torch.randperm(len(self.labels), generator=gen)
        layout = (len(self), self.batch_size)                  # the epoch's global batches
        plan = torch.zeros(4, *layout, dtype=torch.int64)      # index, dy, dx, mirror
        plan[0] = order[:plan[0].numel()].view(layout)
        if self.augment:
            # drawn for every global position of the epoch, whatever start_step, rank and
            # world_size: a sample's crop and flip depend on (seed, epoch, position) alone
            plan[1:3] = torch.randint(0, 2 * self.crop_padding + 1, (2, *layout), generator=gen)
            plan[3] = (torch.rand(layout, generator=gen) < 0.5) & self.flip
        boxes = None
        if self.resized:
            plan[1:3] = 0
            height, width = self.images.shape[-2:]
            boxes = random_boxes(gen, layout, height, width, self.crop_scale)
        local = self.batch_size // self.world_size
        mine = slice(self.rank * local, (self.rank + 1) * local)
        plan = plan[:, start_step:, mine].transpose(0, 1).contiguous()    # [steps, 4, local]
        if boxes is not None:
            boxes = self._to_device(boxes[start_step:, mine].contiguous())  # [steps, local, 4]
        return self._to_device(plan), boxes

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] -> float32 on this loader's device, normalised with its
        mean and std (and channels_last where it feeds that): what the model is fed."""
        return self._normalise(images.to(self.device))

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """normalise() of images already on the device (the epoch loop: no transfer call)."""
        x = (images.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

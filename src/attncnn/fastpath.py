"""Speed-first training pieces, shared by `attncnn bench` and benchmarks/time_to_accuracy.py.

What makes a small-image training step fast on a GPU, and where each piece is here:
- the data set lives on the device as uint8 and every random draw (order, crop, flip) is
  made on the device (`DeviceBatches`): no host->device copy and no host sync per batch;
- channels_last memory format and bfloat16 autocast (tensor cores, half the bytes);
- SGD with the fused CUDA kernel (`make_optimizer`): one launch for all parameters;
- the step returns the loss as a device tensor (`make_train_step`): reading it (`.item()`,
  `float()`, printing) waits for the GPU, so callers add losses up on the device and read
  them once per epoch;
- torch.compile of the model (fuses BN/ReLU/attention element-wise work); mode
  "reduce-overhead" adds CUDA graphs, which pay off where kernel launches dominate (deep,
  narrow nets such as ResNet-110 at small batches).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


def make_optimizer(model: nn.Module, device: torch.device, lr: float = 0.1,
                   momentum: float = 0.9, weight_decay: float = 5e-4,
                   nesterov: bool = True) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum; the fused kernel on CUDA."""
    fused = True if torch.device(device).type == "cuda" else None
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay, fused=fused)


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                    amp: bool, label_smoothing: float = 0.0) -> Callable:
    """step(x, y) -> loss: forward, loss, backward, optimizer step, grads cleared.

    The loss comes back detached and still on the device: reading it would sync.
    """
    device_type = torch.device(device).type

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def make_infer_step(model: nn.Module, device: torch.device, amp: bool,
                    flip_tta: bool = False) -> Callable:
    """step(x, y=None) -> logits (float32) under inference mode; flip_tta adds the mirror's."""
    device_type = torch.device(device).type

    def step(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16,
                                                    enabled=amp):
            logits = model(x).float()
            if flip_tta:
                logits = logits + model(x.flip(-1)).float()
            return logits
    return step


class DeviceBatches:
    """Batches of a uint8 image set held on `device`, with every random draw made there.

    images uint8 [N, 3, H, W], labels int64 [N]. `epoch()` yields (x, y): x float32
    [B, 3, H, W] normalised ((x/255 - mean) / std), channels_last if asked; y int64 [B].
    train=True: a fresh device-side permutation per epoch, drop_last, random translation by
    up to `crop_padding` px (zero fill) and horizontal flip per image. train=False: in order,
    every image once, untouched.
    (attncnn.data.DeviceLoader draws on the CPU so that runs resume and shard exactly; this
    one trades that for no host work per batch.)
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean, std, device: torch.device | str, train: bool, crop_padding: int = 4,
                 flip: bool = True, channels_last: bool = True, seed: int = 0):
        self.device = torch.device(device)
        self.train, self.batch_size, self.flip = train, batch_size, flip
        self.pad = crop_padding if train else 0
        self.labels = labels.to(self.device)
        images = images.to(self.device)
        self.size = images.shape[-2:]
        # padded once here, so a batch's crop is one gather
        self.images = F.pad(images, (self.pad,) * 4) if self.pad else images
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.channels_last = channels_last
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = (torch.randperm(n, device=self.device, generator=self.gen) if self.train
                 else torch.arange(n, device=self.device))
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self._crop_flip(index) if self.train else self.images[index]
            x = (images.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[index]

    def _crop_flip(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W]: each image shifted by (dy, dx) in [-pad, pad], maybe mirrored."""
        b, (h, w), dev = len(index), self.size, self.device
        shift = torch.randint(0, 2 * self.pad + 1, (2, b), device=dev, generator=self.gen)
        rows = shift[0, :, None] + torch.arange(h, device=dev)                    # [B, H]
        cols = shift[1, :, None] + torch.arange(w, device=dev)                    # [B, W]
        if self.flip:
            mirror = torch.rand(b, device=dev, generator=self.gen) < 0.5
            cols = torch.where(mirror[:, None], cols.flip(1), cols)
        batch = index[:, None, None]
        # advanced indices around a slice: the result is [B, H, W, 3]
        return self.images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def one_cycle(total_steps: int, warmup_fraction: float = 0.2) -> Callable[[int], float]:
    """LR multiplier: linear 0 -> 1 over the first `warmup_fraction` of steps, then -> 0."""
    peak = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < peak:
            return (step + 1) / peak
        return max(0.0, (total_steps - step) / max(1, total_steps - peak))
    return factor

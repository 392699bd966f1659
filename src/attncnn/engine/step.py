"""The training step and the inference step: what `attncnn train` runs per batch, what
`attncnn bench` times and what benchmarks/time_to_accuracy.py trains with.

    step = make_train_step(model, optimizer, criterion, device, autocast_dtype(amp))
    loss, logits = step(x, y)      # both detached, still on the device

Neither step reads a value back from the device (no `.item()`, no `float()`): on a GPU that
would wait for the queued work, so callers add losses and hits up on the device and read
them when they report.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

AMP_DTYPE = torch.bfloat16  # the one autocast precision (tensor cores; CPUs with bf16 units)


def autocast_dtype(amp: bool) -> torch.dtype | None:
    """The autocast dtype for `amp` (bf16), or None for float32."""
    return AMP_DTYPE if amp else None


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                    device: torch.device | str, dtype: torch.dtype | None = None
                    ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """step(x, y) -> (loss, logits): forward and loss under autocast to `dtype` (None:
    float32), gradients cleared, backward, optimizer step. The learning rate is whatever
    the optimizer holds (the caller sets it per step). Loss and logits come back detached,
    for the caller's metrics."""
    device_type = torch.device(device).type

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()
    return step


def make_infer_step(model: nn.Module, device: torch.device | str, dtype: torch.dtype | None = None,
                    flip: bool = False, translate: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """infer(x) -> float32 logits under inference mode and autocast to `dtype` (None:
    float32). Test-time augmentation: `flip` averages them with the mirror image's;
    `translate` t > 0 (as airbench's level 2 with t = 1) averages that, with weight 1/2,
    with the mean over two copies shifted by t pixels diagonally one way and the other
    (reflection-padded), each flipped too if `flip`. The model's train/eval mode is the
    caller's to set."""
    device_type = torch.device(device).type

    def views(x: torch.Tensor) -> torch.Tensor:
        logits = model(x).float()
        if flip:
            logits = (logits + model(x.flip(3)).float()) / 2
        return logits

    def infer(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype,
                                                    enabled=dtype is not None):
            logits = views(x)
            if translate:
                t, (h, w) = translate, x.shape[2:]
                padded = F.pad(x, (t,) * 4, mode="reflect")
                shifted = (views(padded[:, :, :h, :w]) + views(padded[:, :, 2 * t:, 2 * t:])) / 2
                logits = (logits + shifted) / 2
            return logits
    return infer

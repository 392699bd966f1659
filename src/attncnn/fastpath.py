"""Speed-first training pieces, shared by `attncnn bench` and benchmarks/time_to_accuracy.py.

What makes a small-image training step fast on a GPU, and where each piece is here:
- the data set lives on the device as uint8 and a whole epoch's order, crop offsets and
  flips reach it in one copy at the epoch's start (`attncnn.data.DeviceLoader`): no
  host->device copy and no host sync per batch;
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

from typing import Callable

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


def one_cycle(total_steps: int, warmup_fraction: float = 0.2) -> Callable[[int], float]:
    """LR multiplier: linear 0 -> 1 over the first `warmup_fraction` of steps, then -> 0."""
    peak = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < peak:
            return (step + 1) / peak
        return max(0.0, (total_steps - step) / max(1, total_steps - peak))
    return factor

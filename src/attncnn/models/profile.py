"""Model size and cost: parameters and multiply-accumulates, counted without real data."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on one image of `input_size` (C, H, W).

    Counted by torch's FLOP counter (matmuls and convolutions; 1 MAC = 2 FLOPs). The
    model is copied to the meta device first, so no memory is touched and no time spent.
    """
    meta = _to_meta(model).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, *input_size, device="meta"))
    return counter.get_total_flops() // 2


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model) if not any(p.is_meta for p in model.parameters()) else model
    return clone.to("meta")

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


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
               "_backward_pre_hooks", "_forward_hooks_with_kwargs",
               "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def _to_meta(model: nn.Module) -> nn.Module:
    """A copy of `model` on the meta device, without the hooks anyone registered on it: a
    hook may hold what cannot be copied (an open file, a lock) and has no business running
    while MACs are counted. A model already on the meta device is used as it is."""
    import copy

    if any(p.is_meta for p in model.parameters()):
        return model.to("meta")
    memo = {}
    for module in model.modules():
        for attr in _HOOK_DICTS:
            hooks = module.__dict__.get(attr)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()   # the copy gets an empty one
    return copy.deepcopy(model, memo).to("meta")

"""Pieces shared by every backbone: size checks, the placement option and weight
initialisation."""
from __future__ import annotations

import difflib
from typing import Sequence

from torch import nn

from attncnn.errors import AttncnnError
from attncnn.models.attention import SpatialSoftmaxAttention, make_attention

PLACEMENTS = ("block", "stage", "end")


def check_sizes(owner: str, **sizes: int | Sequence[int]) -> None:
    """Refuse, in one line naming the argument, a size (or any item of a list of sizes)
    that is not a whole number >= 1.

    torch builds layers of zero width without complaint: `widths=[0, 0, 0]` would give a
    model whose output ignores its input, and a negative size fails deep inside torch.
    """
    for name, value in sizes.items():
        is_list = isinstance(value, (list, tuple))
        items = value if is_list else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                for v in items):
            what = "whole numbers" if is_list else "a whole number"
            raise AttncnnError(f"{owner}: {name} must be {what} >= 1, got {value!r}")


def units_per_stage(owner: str, depth: int, extra: int, examples: str) -> int:
    """n for a depth of 6n + extra: three stages of n two-layer units (basic blocks, dense
    layers) plus `extra` other layers; n = 0 would build stages with nothing in them."""
    if depth < 6 + extra or (depth - extra) % 6:
        raise AttncnnError(f"{owner}: depth must be 6n+{extra} with n >= 1 ({examples}), "
                           f"got {depth}")
    return (depth - extra) // 6


def check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        close = difflib.get_close_matches(str(placement), PLACEMENTS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AttncnnError(
            f"unknown attention_placement {placement!r}{hint} (choose one of "
            f"{', '.join(PLACEMENTS)})"
        )
    return placement


class AttentionPlan:
    """Where a backbone puts its attention: `plan("block", 64)` -> module for that spot.

    Returns the attention module of `kind` where `where` equals the chosen placement and
    an nn.Identity everywhere else, so backbones never special-case a kind.
    """

    def __init__(self, kind: str | None, placement: str = "block", options: dict | None = None):
        self.kind = kind
        self.placement = check_placement(placement)
        self.options = dict(options or {})

    def __call__(self, where: str, channels: int) -> nn.Module:
        kind = self.kind if where == self.placement else None
        return make_attention(kind, channels, **self.options)


def init_weights(model: nn.Module) -> None:
    """He-normal convs and FC, BN at (1, 0); attention convs keep their own init."""
    skip = {id(m.conv) for m in model.modules() if isinstance(m, SpatialSoftmaxAttention)}
    for m in model.modules():
        if id(m) in skip:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

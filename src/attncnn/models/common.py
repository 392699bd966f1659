"""Pieces shared by every backbone: size checks, the placement option, weight
initialisation and the `Backbone` base class (forward = forward_head(forward_features))."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from attncnn.errors import AttncnnError, did_you_mean
from attncnn.models.attention_kinds import make_attention

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
        raise AttncnnError(
            f"unknown attention_placement {placement!r}{did_you_mean(placement, PLACEMENTS)} "
            f"(choose one of {', '.join(PLACEMENTS)})"
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


def init_weights(module: nn.Module) -> None:
    """He-normal convs and FC, BN at (1, 0), in module order. A submodule that has its own
    `init_weights()` (the softmax attention: a zero conv) is left to initialise itself."""
    for child in module.children():
        own = getattr(child, "init_weights", None)
        if callable(own):
            own()
            continue
        if isinstance(child, nn.Conv2d):
            nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
        elif isinstance(child, nn.Linear):
            nn.init.normal_(child.weight, std=0.01)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        init_weights(child)


class Backbone(nn.Module):
    """A classifier split as timm splits one: forward(x) = forward_head(forward_features(x)).

    Subclasses define `forward_features` (x [B, C, H, W] -> feature maps
    [B, num_features, h, w]) and `fc`; the head pools globally (`global_pool`: "avg" or
    "max") and applies `fc`. Grad-CAM (attncnn.analysis.explain) differentiates the head with
    respect to the features.
    """

    global_pool = "avg"
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature maps [B, C, h, w] -> logits [B, num_classes] (pre_logits: the pooled
        features [B, C])."""
        x = x.amax((2, 3)) if self.global_pool == "max" else x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

"""The attention kinds by name: `ATTENTION_KINDS` is the one table that `make_attention`,
the `attention=` model argument and the registered model names read.

Each kind names its module class, the prefix of its registered models (every backbone is
registered once per kind as `<prefix><backbone>`, e.g. `attn_resnet110_cifar`) and where
those models put it by default. A new kind is its module in a file of its own (a subclass
of `AttentionModule`, taking `channels` and keyword options, that passes the attention it
applies through `self.tap`; `spatial_maps = True` when that is a map over positions, so
that `explain` draws it) plus one line in the table below; see docs/architecture.md.
"""
from __future__ import annotations

import inspect
from typing import NamedTuple

from torch import nn

from attncnn.errors import AttncnnError, did_you_mean
from attncnn.models.attention import CBAM, AttentionModule, SpatialSoftmaxAttention, SqueezeExcite


class AttentionKind(NamedTuple):
    module: type[AttentionModule]   # built as module(channels, **options)
    prefix: str                     # its registered models: f"{prefix}{backbone}"
    placement: str                  # their default attention_placement: block, stage or end


ATTENTION_KINDS: dict[str, AttentionKind] = {
    # The paper puts its attention "after convolutional stages"; SE and CBAM sit in every block.
    "softmax": AttentionKind(SpatialSoftmaxAttention, "attn_", "stage"),
    "se": AttentionKind(SqueezeExcite, "se_", "block"),
    "cbam": AttentionKind(CBAM, "cbam_", "block"),
}


def make_attention(kind: str | None, channels: int, **opts) -> nn.Module:
    """Build the attention module `kind` for `channels` feature maps; None -> nn.Identity."""
    if kind is None or kind == "none":
        return nn.Identity()
    try:
        cls = ATTENTION_KINDS[kind].module
    except (KeyError, TypeError):  # TypeError: an unhashable kind, e.g. a list
        known = ["none", *ATTENTION_KINDS]
        raise AttncnnError(f"unknown attention kind {kind!r}{did_you_mean(kind, known)} "
                           f"(known kinds: {', '.join(known)})") from None
    options = [n for n in inspect.signature(cls).parameters if n != "channels"]
    for key in opts:
        if key not in options:
            raise AttncnnError(f"attention {kind!r}: unknown option {key!r}"
                               f"{did_you_mean(key, options)} (options: {', '.join(options)})")
    try:
        return cls(channels, **opts)
    except TypeError as err:
        raise AttncnnError(f"attention {kind!r}: bad option ({err})") from None

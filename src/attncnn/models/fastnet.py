"""FastNet: a small plain conv net built for speed to accuracy on CIFAR-10, with pluggable
attention. Its shape is that of airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"),
the fastest published CIFAR-10 trainer, rebuilt here so that the paper's attention can be
put in it and timed against that net (benchmarks/time_to_accuracy.py).

Layout (x [B, 3, 32, 32], widths (64, 256, 256)):
    stem    conv2x2 3->24 (no padding, bias), GELU                           [B, 24, 31, 31]
            (a whitening conv: `whiten(images)` sets its weight from the training images'
            2x2 patches and freezes it; until then it is a plain trainable conv)
    group1  conv3x3 24->64, maxpool2, BN, GELU, conv3x3 64->64, BN, GELU     [B, 64, 15, 15]
    group2  the same to 256                                                  [B, 256, 7, 7]
    group3  the same to 256                                                  [B, 256, 3, 3]
    head    global max pool, FC 256->classes (no bias), logits * 1/9
1.97M parameters at the default widths. No residual connections. BatchNorm has eps 1e-12,
momentum 0.4 (PyTorch's convention: weight of the new batch) and a frozen weight of 1, only
its bias trains; each 3x3 conv starts with its first `in_channels` filters as the identity
(Dirac), so the fresh net passes its input through; everything else keeps PyTorch's default
initialisation.

attention_placement: "block" (inside each group, after its first conv's GELU), "stage"
(after each group: 64@15x15, 256@7x7, 256@3x3) or "end" (before pooling).
"""
from __future__ import annotations

import torch
from torch import nn

from attncnn.errors import AttncnnError
from attncnn.models.common import AttentionPlan, Backbone, check_sizes
from attncnn.models.whitening import whiten_conv_


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BN with only a bias to learn (weight frozen at 1), eps 1e-12, momentum 0.4."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    """conv3x3, maxpool2, BN, GELU, [attention], conv3x3, BN, GELU: [B, C, H, W] ->
    [B, out, H/2, W/2]."""

    def __init__(self, in_channels: int, out_channels: int, attention: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = batch_norm(out_channels)
        self.attention = attention
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = batch_norm(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        x = self.attention(x)
        return self.act(self.norm2(self.conv2(x)))


class FastNet(Backbone):
    """x [B, 3, H, W] -> logits [B, num_classes] (H, W >= 15)."""

    global_pool = "max"

    def __init__(self, num_classes: int = 10, attention: str | None = None,
                 attention_placement: str = "stage", attention_options: dict | None = None,
                 widths: tuple[int, int, int] | list[int] = (64, 256, 256),
                 stem_kernel: int = 2, logit_scale: float = 1 / 9, in_channels: int = 3):
        super().__init__()
        widths = list(widths)
        check_sizes("FastNet", num_classes=num_classes, widths=widths, stem_kernel=stem_kernel,
                    in_channels=in_channels)
        if len(widths) != 3:
            raise AttncnnError(f"FastNet: widths must be three whole numbers (one per group), "
                               f"got {widths!r}")
        attn = AttentionPlan(attention, attention_placement, attention_options)
        stem_width = 2 * in_channels * stem_kernel * stem_kernel  # every patch direction, +-
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, stem_kernel, bias=True),
                                  nn.GELU())
        groups, previous = [], stem_width
        for width in widths:
            groups.append(nn.Sequential(ConvGroup(previous, width, attn("block", width)),
                                        attn("stage", width)))
            previous = width
        self.stages = nn.Sequential(*groups)
        self.attention = attn("end", previous)
        self.fc = nn.Linear(previous, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.num_features = previous
        # PyTorch's default initialisation, as airbench keeps it (not `init_weights`' He
        # normal: its smaller FC would slow the first epochs, which are most of this net's
        # schedule); the softmax attention starts as the identity by its own init.
        for module in self.modules():  # identity start: the first in_channels filters
            if isinstance(module, ConvGroup):
                for conv in (module.conv1, module.conv2):
                    n = min(conv.out_channels, conv.in_channels)
                    nn.init.dirac_(conv.weight.data[:n])

    @torch.no_grad()
    def whiten(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem conv to the whitening filters of `images` [N, C, H, W] (normalised
        as the model sees them; a few thousand training images are plenty) and freeze it."""
        conv = self.stem[0]
        whiten_conv_(conv, images.to(conv.weight.device), eps)
        conv.weight.requires_grad_(False)

    def whitening_bias(self) -> nn.Parameter:
        """The whitening stem's bias: it still trains after `whiten` (airbench trains it for
        the first 3 epochs only; `model.whiten_bias_epochs` in a config)."""
        return self.stem[0].bias

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> last feature maps [B, widths[-1], h, w] (3x3 at 32x32)."""
        return self.attention(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global max pooling, fc, logits * logit_scale (pre_logits: the pooled features)."""
        x = super().forward_head(x, pre_logits)
        return x if pre_logits else x * self.logit_scale

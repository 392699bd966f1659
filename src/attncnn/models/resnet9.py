"""ResNet-9 for CIFAR (the DAWNBench network of Page 2018, "How to train your ResNet"), with
pluggable attention: a fast-training net, ~94% on CIFAR-10 in ~24 epochs.

Layout (x [B, 3, 32, 32]):
    prep    conv3x3 3->64, BN, ReLU                                   [B, 64, 32, 32]
    layer1  conv3x3 64->128, BN, ReLU, maxpool2 + residual(2 x conv-BN-ReLU 128)  [B, 128, 16, 16]
    layer2  conv3x3 128->256, BN, ReLU, maxpool2                      [B, 256, 8, 8]
    layer3  conv3x3 256->512, BN, ReLU, maxpool2 + residual(2 x conv-BN-ReLU 512) [B, 512, 4, 4]
    head    global max pool, FC 512->classes (no bias), logits * 0.125
6.57M parameters, 0.38G MACs at 32x32. The 0.125 scale keeps the early logits small, which
the short, high-learning-rate schedule relies on.

attention_placement: "block" (on each residual branch, before the addition), "stage"
(after each of the three layers: 128@16x16, 256@8x8, 512@4x4), "end" (before pooling).
"""
from __future__ import annotations

import torch
from torch import nn

from attncnn.models.common import AttentionPlan, Backbone, check_sizes, init_weights


def conv_bn(in_channels: int, out_channels: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
              nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + attention(conv-BN-ReLU(conv-BN-ReLU(x))), channels unchanged."""

    def __init__(self, channels: int, attention: nn.Module):
        super().__init__()
        self.branch = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.branch(x))


class ResNet9(Backbone):
    """x [B, 3, H, W] -> logits [B, num_classes] (H, W divisible by 8)."""

    global_pool = "max"

    def __init__(self, num_classes: int = 10, attention: str | None = None,
                 attention_placement: str = "stage", attention_options: dict | None = None,
                 width: int = 64, logit_scale: float = 0.125, in_channels: int = 3):
        super().__init__()
        check_sizes("ResNet-9", num_classes=num_classes, width=width, in_channels=in_channels)
        attn = AttentionPlan(attention, attention_placement, attention_options)
        w1, w2, w3, w4 = width, 2 * width, 4 * width, 8 * width
        self.prep = conv_bn(in_channels, w1)
        self.stages = nn.Sequential(
            nn.Sequential(conv_bn(w1, w2, pool=True), Residual(w2, attn("block", w2)),
                          attn("stage", w2)),
            nn.Sequential(conv_bn(w2, w3, pool=True), attn("stage", w3)),
            nn.Sequential(conv_bn(w3, w4, pool=True), Residual(w4, attn("block", w4)),
                          attn("stage", w4)),
        )
        self.attention = attn("end", w4)
        self.fc = nn.Linear(w4, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.num_features = w4
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> last feature maps [B, 512, H/8, W/8]."""
        return self.attention(self.stages(self.prep(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global max pooling, fc, logits * logit_scale (pre_logits: the pooled [B, 512])."""
        x = super().forward_head(x, pre_logits)
        return x if pre_logits else x * self.logit_scale

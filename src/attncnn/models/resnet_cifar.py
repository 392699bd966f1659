"""CIFAR ResNets (He et al. 2016, section 4.2) with pluggable attention.

depth = 6n + 2: a 3x3 conv of 16 filters, then three stages of n basic blocks with 16, 32
and 64 filters (the 2nd and 3rd start with stride 2), global average pooling, one FC.
Shortcuts are option A: identity, or stride-2 subsampling with zero-padded channels where
the shape changes, so shortcuts add no parameters (ResNet-20: 0.27M, ResNet-110: 1.7M).

attention_placement:
- "block": one module on every block's residual branch, before the addition (where SE
  and CBAM put theirs);
- "stage": one module after the last block of every stage;
- "end": one module on the last stage's output, before pooling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attncnn.errors import AttncnnError
from attncnn.models.common import AttentionPlan, check_sizes, init_weights, units_per_stage


class ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by `stride`, zero-pad to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN [-attention] + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, attention: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = attention
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (works on any size: pooling is global).

    x [B, 3, H, W] -> logits [B, num_classes].
    """

    def __init__(
        self,
        depth: int = 110,
        num_classes: int = 10,
        attention: str | None = None,
        attention_placement: str = "block",
        attention_options: dict | None = None,
        widths: tuple[int, int, int] = (16, 32, 64),
        in_channels: int = 3,
    ):
        super().__init__()
        check_sizes("CIFAR ResNet", depth=depth, num_classes=num_classes, in_channels=in_channels,
                    widths=widths)
        n = units_per_stage("CIFAR ResNet", depth, 2, "8, 20, 32, 44, 56, 110")
        if not isinstance(widths, (list, tuple)) or len(widths) != 3:  # 6n+2: 3 stages of n blocks
            raise AttncnnError(f"CIFAR ResNet: widths must list 3 stage widths, got {widths!r}")
        attn = AttentionPlan(attention, attention_placement, attention_options)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(channels, width, stride, attn("block", width)))
                channels = width
            blocks.append(attn("stage", width))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.attention = attn("end", channels)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> last feature maps [B, 64, H/4, W/4]."""
        return self.attention(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))

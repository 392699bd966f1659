"""ImageNet ResNets (He et al. 2016) with pluggable attention, shaped like torchvision's.

ResNet-18/34 use basic blocks, ResNet-50/101 bottlenecks (1x1, 3x3 with the stride, 1x1
expanding x4; projection shortcuts where the shape changes). Stem: 7x7/2 conv, BN, ReLU,
3x3/2 max-pool; four stages of 64/128/256/512 base widths; global pooling; one FC.
Parameter counts: ResNet-50 25.56M, SE-ResNet-50 28.09M, CBAM-ResNet-50 28.09M.

attention_placement: "block" (on each block's residual branch, before the addition, as
SE-ResNet and CBAM-ResNet do), "stage" (after each stage), "end" (before pooling).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attncnn.errors import AttncnnError
from attncnn.models.common import AttentionPlan, check_sizes, init_weights

LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, attention: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.attention = attention
        self.shortcut = _projection(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, attention: nn.Module):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attention = attention
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-{18,34,50,101} for 224x224 inputs. x [B, 3, H, W] -> logits [B, num_classes]."""

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        attention: str | None = None,
        attention_placement: str = "block",
        attention_options: dict | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        if depth not in LAYERS:
            raise AttncnnError(f"ImageNet ResNet: depth must be one of {sorted(LAYERS)}, got {depth}")
        check_sizes("ImageNet ResNet", num_classes=num_classes, in_channels=in_channels)
        kind, counts = LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        attn = AttentionPlan(attention, attention_placement, attention_options)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, channels = [], 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), counts)):
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                out = width * block.expansion
                blocks.append(block(channels, width, stride, attn("block", out)))
                channels = out
            blocks.append(attn("stage", channels))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.attention = attn("end", channels)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> last feature maps [B, C, H/32, W/32]."""
        return self.attention(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))

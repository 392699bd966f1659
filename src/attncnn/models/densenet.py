"""DenseNet-BC for CIFAR (Huang et al. 2017) with pluggable attention.

L = depth, k = growth rate. Three dense blocks of (L - 4) / 6 bottleneck layers
(BN-ReLU-conv1x1 to 4k, BN-ReLU-conv3x3 to k, output concatenated to the input), joined by
transitions (BN-ReLU-conv1x1 compressing channels by 0.5, 2x2 average pooling). The stem
is a 3x3 conv to 2k channels; BN-ReLU, global pooling and one FC end it.
DenseNet-BC-100 k=12 has 0.8M parameters (0.769M for 10 classes).

attention_placement:
- "block": one module on every dense layer's k new feature maps, before concatenation;
- "stage": one module after every dense block;
- "end": one module on the final feature maps, before pooling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attncnn.errors import AttncnnError
from attncnn.models.common import (
    AttentionPlan,
    Backbone,
    check_sizes,
    init_weights,
    units_per_stage,
)


class DenseLayer(nn.Module):
    """x [B, C, H, W] -> cat(x, attention(new k maps)) [B, C + k, H, W]."""

    def __init__(self, in_channels: int, growth: int, attention: nn.Module):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, self.attention(out)], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (C -> out) - avgpool 2x2: halves H and W."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNetBC(Backbone):
    """DenseNet-BC-L for 32x32 inputs. x [B, 3, H, W] -> logits [B, num_classes]."""

    def __init__(
        self,
        depth: int = 100,
        growth: int = 12,
        num_classes: int = 10,
        compression: float = 0.5,
        attention: str | None = None,
        attention_placement: str = "block",
        attention_options: dict | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        check_sizes("DenseNet-BC", depth=depth, growth=growth, num_classes=num_classes,
                    in_channels=in_channels)
        n = units_per_stage("DenseNet-BC", depth, 4, "e.g. 100, 190")
        if not 0 < compression <= 1:
            raise AttncnnError(f"DenseNet-BC: compression must be in (0, 1], got {compression}")
        attn = AttentionPlan(attention, attention_placement, attention_options)
        channels = 2 * growth
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages = []
        for i in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth, attn("block", growth)))
                channels += growth
            layers.append(attn("stage", channels))
            if i < 2:
                out = int(channels * compression)
                layers.append(Transition(channels, out))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(channels)
        self.attention = attn("end", channels)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> last feature maps [B, C, H/4, W/4] (after BN-ReLU)."""
        return self.attention(F.relu(self.norm(self.stages(self.stem(x)))))

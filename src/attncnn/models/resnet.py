"""ResNets (He et al. 2016) with pluggable attention: one family for CIFAR and ImageNet.

Both are built from the same blocks and stage builder (`make_stages`, as torchvision's
`_make_layer`); they differ in stem, widths and the shortcut where a block changes shape:

- `CifarResNet` (section 4.2): depth = 6n + 2, a 3x3 conv of 16 filters, then three stages
  of n basic blocks with 16, 32 and 64 filters (the 2nd and 3rd start with stride 2),
  global average pooling, one FC. Shortcuts are option A (`ShortcutA`): stride-2
  subsampling with zero-padded channels, so they add no parameters (ResNet-20: 0.27M,
  ResNet-110: 1.7M).
- `ResNet`, shaped like torchvision's: ResNet-18/34 use basic blocks, ResNet-50/101
  bottlenecks (1x1, 3x3 with the stride, 1x1 expanding x4). Stem: 7x7/2 conv, BN, ReLU,
  3x3/2 max-pool; four stages of 64/128/256/512 base widths; global pooling; one FC.
  Shortcuts are 1x1 conv + BN projections (`projection`). Parameter counts: ResNet-50
  25.56M, SE-ResNet-50 28.09M, CBAM-ResNet-50 28.09M.

attention_placement:
- "block": one module on every block's residual branch, before the addition (where SE
  and CBAM put theirs);
- "stage": one module after the last block of every stage;
- "end": one module on the last stage's output, before pooling.
"""
from __future__ import annotations

from typing import Callable, Sequence

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

# (in_channels, out_channels, stride) -> the shortcut of a block that changes shape
ShortcutFactory = Callable[[int, int, int], nn.Module]


class ShortcutA(nn.Module):
    """Option A, parameter-free: subsample by `stride`, zero-pad to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Option B: 1x1 conv with the stride, then BN (torchvision's `downsample`)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class _Block(nn.Module):
    """Residual block: relu(attention(branch(x)) + shortcut(x)). Subclasses build conv1,
    bn1, ... (the branch); the shortcut is the identity unless the shape changes."""

    expansion = 1

    def _finish(self, in_channels: int, out_channels: int, stride: int, attention: nn.Module,
                shortcut: ShortcutFactory) -> None:
        self.attention = attention
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = shortcut(in_channels, out_channels, stride)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.attention(self.branch(x)) + self.shortcut(x))


class BasicBlock(_Block):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN [-attention] + shortcut, ReLU."""

    def __init__(self, in_channels: int, width: int, stride: int, attention: nn.Module,
                 shortcut: ShortcutFactory = projection):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self._finish(in_channels, width, stride, attention, shortcut)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_Block):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1 (x4)-BN [-attention] + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, attention: nn.Module,
                 shortcut: ShortcutFactory = projection):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self._finish(in_channels, out_channels, stride, attention, shortcut)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def make_stages(block: type[_Block], in_channels: int, widths: Sequence[int],
                counts: Sequence[int], attn: AttentionPlan, shortcut: ShortcutFactory
                ) -> tuple[nn.Sequential, int]:
    """(stages, output channels): stage i is counts[i] blocks of width widths[i] (the first
    with stride 2, except in stage 0), then attn("stage", ...). Every block gets
    attn("block", ...) on its branch; the plan makes all but the chosen placement identities.
    Names: stages.<i>.<j> for block j, stages.<i>.<counts[i]> for the stage's attention."""
    stages, channels = [], in_channels
    for i, (width, count) in enumerate(zip(widths, counts)):
        blocks = []
        for j in range(count):
            stride = 2 if (i > 0 and j == 0) else 1
            out = width * block.expansion
            blocks.append(block(channels, width, stride, attn("block", out), shortcut))
            channels = out
        blocks.append(attn("stage", channels))
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), channels


class _ResNet(Backbone):
    """stem (starting with its conv) -> stages -> attention ("end") -> global average
    pooling -> fc."""

    def _build(self, stem: nn.Sequential, block: type[_Block], widths: Sequence[int],
               counts: Sequence[int], attn: AttentionPlan, shortcut: ShortcutFactory,
               num_classes: int) -> None:
        self.stem = stem
        self.stages, channels = make_stages(block, stem[0].out_channels, widths, counts, attn,
                                            shortcut)
        self.attention = attn("end", channels)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> last feature maps [B, num_features, h, w]."""
        return self.attention(self.stages(self.stem(x)))


class CifarResNet(_ResNet):
    """ResNet-(6n+2) for 32x32 inputs (works on any size: pooling is global).

    x [B, 3, H, W] -> logits [B, num_classes]; features [B, 64, H/4, W/4].
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
        stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self._build(stem, BasicBlock, widths, (n,) * 3, attn, ShortcutA, num_classes)


LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class ResNet(_ResNet):
    """ResNet-{18,34,50,101} for 224x224 inputs. x [B, 3, H, W] -> logits [B, num_classes];
    features [B, C, H/32, W/32]."""

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
        attn = AttentionPlan(attention, attention_placement, attention_options)
        stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        block = BasicBlock if kind == "basic" else Bottleneck
        self._build(stem, block, (64, 128, 256, 512), counts, attn, projection, num_classes)

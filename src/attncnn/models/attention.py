"""Attention modules (built by name through `make_attention`, attncnn.models.attention_kinds).

Every module maps x [B, C, H, W] to a tensor of the same shape, and keeps no state between
forward passes. The attention it applies passes through its `tap` (an identity submodule
with no parameters), where forward hooks read it, so `explain` needs no second forward pass:

    with record_attention(model) as maps:   # {module name: tensor}, filled as modules run
        logits = model(images)

The hooks are removed on leaving the block; outside it a forward pass is a plain one
(nothing to switch off before exporting or compiling).

The built-in kinds (named in `attention_kinds.ATTENTION_KINDS`):
- "softmax": the paper's module (`SpatialSoftmaxAttention`).
- "se": squeeze-and-excitation, channel attention from global average pooling (Hu 2018).
- "cbam": channel then spatial attention (Woo 2018).
- None / "none": identity, for the no-attention ablation.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from attncnn.errors import AttncnnError


class AttentionTap(nn.Identity):
    """The attention a module applies passes through here unchanged: a place for forward
    hooks (`record_attention`) to read it. No parameters: state dicts are unaffected."""


class AttentionModule(nn.Module):
    """Base of the attention modules: `tap`, through which forward() passes the attention
    it applies (the tensor documented as the module's maps). `spatial_maps`: whether those
    are maps over positions [B, M, h, w], which `explain` draws and scores, rather than
    per-channel gates [B, C, 1, 1]."""

    spatial_maps = False

    def __init__(self):
        super().__init__()
        self.tap = AttentionTap()


class SpatialSoftmaxAttention(AttentionModule):
    """The paper's attention: conv filters -> M maps -> softmax over H*W -> x * maps.

    Shapes: x [B, C, H, W] -> logits [B, M, H, W] -> a = softmax over the H*W positions of
    each map, so every map sums to 1. A map of M < C broadcasts over a group of C/M
    channels (C must be divisible by M).

    Scaling (`mode`):
    - "mean" (default): weights w = a * H*W, so the mean weight over positions is exactly 1.
      Unscaled softmax weights are ~1/(H*W) (1/1024 at 32x32); multiplied through a few
      modules the activations vanish. With the mean at 1 the module rescales where the
      signal is without changing its overall size, BN downstream sees the same statistics,
      and with the zero-initialised conv it starts as the identity (uniform softmax).
    - "residual": x * (1 + w) with the same mean-1 w, as in residual attention networks:
      the identity path is always kept, attention can only emphasise.
    The maps (`tap`, `record_attention`) are w (mean 1 per map) [B, M, H, W].

    temperature divides the logits: > 1 flattens the maps, < 1 sharpens them.
    logit_bound (default 2) soft-clamps the logits to (-b, b) with b * tanh(logits / b), so
    no weight exceeds e^(2b) (~55 for b=2) nor falls below e^(-2b). Unbounded, a module on
    the main path (placement "stage"/"end") can put a weight of up to H*W (1024 at 32x32) on
    one position early in training; the activations and BN statistics behind it blow up and
    the network stops learning (measured: ResNet-8 with stage attention stayed at chance on
    the digits data, and learned once bounded). None switches the clamp off.
    """

    spatial_maps = True

    def __init__(
        self,
        channels: int,
        num_maps: int = 1,
        kernel_size: int = 3,
        temperature: float = 1.0,
        mode: str = "mean",
        logit_bound: float | None = 2.0,
    ):
        super().__init__()
        if num_maps < 1 or channels % num_maps:
            raise AttncnnError(
                f"softmax attention: num_maps={num_maps} must be >= 1 and divide channels={channels}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise AttncnnError(f"softmax attention: kernel_size={kernel_size} must be odd and >= 1")
        if not temperature > 0:
            raise AttncnnError(f"softmax attention: temperature={temperature} must be > 0")
        if logit_bound is not None and not logit_bound > 0:
            raise AttncnnError(f"softmax attention: logit_bound={logit_bound} must be > 0 or None")
        if mode not in ("mean", "residual"):
            raise AttncnnError(f"softmax attention: mode={mode!r} must be 'mean' or 'residual'")
        self.num_maps = num_maps
        self.temperature = float(temperature)
        self.mode = mode
        self.logit_bound = logit_bound
        self.conv = nn.Conv2d(channels, num_maps, kernel_size, padding=kernel_size // 2)
        self.init_weights()

    def init_weights(self) -> None:
        """A zero conv: uniform softmax, so the fresh module is the identity. A model's
        `init_weights` leaves a module that has this method to it."""
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-1 spatial weights [B, M, H, W] for x [B, C, H, W]."""
        b, _, h, w = x.shape
        logits = self.conv(x).flatten(2) / self.temperature  # [B, M, H*W]
        if self.logit_bound is not None:  # soft clamp: weights stay within about e^(+-2 bound)
            logits = self.logit_bound * torch.tanh(logits / self.logit_bound)
        a = torch.softmax(logits.float(), dim=-1).to(x.dtype)
        return (a * (h * w)).view(b, self.num_maps, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.tap(self.attention(x))
        if self.mode == "residual":
            weights = 1 + weights
        b, c, h, w = x.shape
        grouped = x.view(b, self.num_maps, c // self.num_maps, h, w)
        return (grouped * weights.unsqueeze(2)).view(b, c, h, w)


class SqueezeExcite(AttentionModule):
    """Channel attention from global average pooling (Hu et al. 2018).

    x [B, C, H, W] -> mean over H, W [B, C] -> FC C/r -> ReLU -> FC C -> sigmoid -> x * s.
    The maps (`tap`) are s [B, C, 1, 1].
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if reduction < 1:
            raise AttncnnError(f"se attention: reduction={reduction} must be >= 1")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.tap(torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))))
        return x * s


class CBAM(AttentionModule):
    """Convolutional Block Attention Module (Woo et al. 2018): channel, then spatial.

    Channel: a shared MLP (reduction r) over the average- and max-pooled [B, C] vectors,
    summed, sigmoid. Spatial: mean and max over channels [B, 2, H, W] -> 7x7 conv -> BN ->
    sigmoid [B, 1, H, W]. The maps (`tap`) are the spatial map [B, 1, H, W].
    """

    spatial_maps = True

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        if reduction < 1:
            raise AttncnnError(f"cbam attention: reduction={reduction} must be >= 1")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise AttncnnError(f"cbam attention: kernel_size={kernel_size} must be odd and >= 1")
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean((2, 3), keepdim=True))
        mx = self.mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        s = self.tap(torch.sigmoid(self.spatial(pooled)))
        return x * s


def attention_modules(model: nn.Module) -> Iterator[tuple[str, AttentionModule]]:
    """(qualified name, module) for every attention module in `model`, in forward order."""
    for name, module in model.named_modules():
        if isinstance(module, AttentionModule):
            yield name, module


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the maps of every attention module during the forward passes inside.

    Yields a dict {module name: maps of the last forward}, filled by forward hooks on the
    modules' `tap` as they run; the hooks are removed on exit, whatever happens.
    """
    found: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            found[name] = output
        return hook

    handles = [module.tap.register_forward_hook(keep(name))
               for name, module in attention_modules(model)]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()

"""Patch-whitening initialisation of a first convolution (a data-dependent init).

The filters are the principal directions of the training images' k x k patches, each
scaled by 1 / sqrt(its variance + eps), and each also negated: a conv with them maps a
patch to coordinates in which the patches' second moment is the identity, and after a
ReLU/GELU both signs of every direction survive. The idea is from Page (2018, "How to train
your ResNet", part 8) and airbench (Jordan 2024), where a frozen 2x2 whitening conv makes
the first epochs count for more.

    whiten_conv_(model.stem[0], normalised_train_images[:5000])

Shapes: images [N, C, H, W]; the conv's weight [2m, C, k, k] with m <= C*k*k (the m
directions of largest variance are kept).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attncnn.errors import AttncnnError


def patch_second_moment(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """E[p p^T] over every k x k patch p (flattened to C*k*k) of `images` [N, C, H, W],
    in float64: [C*k*k, C*k*k]. Uncentred: the mean patch is one of its directions."""
    patches = F.unfold(images.detach().to(torch.float64), kernel_size)  # [N, Ckk, L]
    flat = patches.transpose(1, 2).reshape(-1, patches.shape[1])       # [N*L, Ckk]
    return flat.T @ flat / flat.shape[0]


def patch_whitening_filters(images: torch.Tensor, kernel_size: int, directions: int | None = None,
                            eps: float = 5e-4) -> torch.Tensor:
    """Whitening filters for `images` [N, C, H, W]: [2m, C, k, k], the m directions of
    largest variance scaled by 1/sqrt(variance + eps), then the same negated (m: all C*k*k
    unless `directions` says fewer)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise AttncnnError(f"whitening: images must be a non-empty [N, C, H, W] batch, got "
                           f"shape {tuple(images.shape)}")
    c = images.shape[1]
    dim = c * kernel_size * kernel_size
    m = dim if directions is None else directions
    if not 1 <= m <= dim:
        raise AttncnnError(f"whitening: {m} directions asked of {c}-channel {kernel_size}x"
                           f"{kernel_size} patches, which have {dim}")
    variances, vectors = torch.linalg.eigh(patch_second_moment(images, kernel_size))
    order = variances.argsort(descending=True)[:m]                       # largest first
    scaled = vectors[:, order].T / torch.sqrt(variances[order].clamp_min(0) + eps)[:, None]
    filters = scaled.reshape(m, c, kernel_size, kernel_size)
    return torch.cat([filters, -filters]).to(torch.float32)


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> nn.Conv2d:
    """Set `conv`'s weight to the whitening filters of `images` (its bias is left alone)
    and return it. The conv needs an even number of output channels, at most 2*C*k*k, a
    square kernel, stride-1 patches (any stride is fine at use) and no groups."""
    out, c, kh, kw = conv.weight.shape
    if kh != kw or conv.groups != 1 or out % 2 or images.ndim != 4 or images.shape[1] != c:
        raise AttncnnError(
            f"whitening: a {out}x{c}x{kh}x{kw} conv (groups {conv.groups}) cannot be whitened "
            f"from images of shape {tuple(images.shape)}: it needs a square kernel, no groups, "
            f"an even number of output channels and images with {c} channels")
    filters = patch_whitening_filters(images, kh, out // 2, eps)
    conv.weight.copy_(filters.to(conv.weight.device, conv.weight.dtype))
    return conv

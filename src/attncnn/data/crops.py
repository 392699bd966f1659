"""ImageNet-style crops of a decoded uint8 image set, in batches (no per-image Python).

Training (`data.train_crop: random_resized`): each image gets a random box of
`crop_scale` of its area with aspect ratio 3/4-4/3 (ten tries, as torchvision draws them,
then the whole image), resized to crop_size x crop_size and mirrored half the time. The boxes
of an epoch are drawn in one go (`random_boxes`), and a batch's crops are one
`affine_grid` + `grid_sample` (bilinear) over its images (`resized_crops`).

Evaluation: the shorter side resized to crop_size / eval_crop_ratio (bicubic, antialiased),
then the centred crop_size square (`centre_view`): the eval set is made once, at the size the
model sees, so evaluation batches are plain slices. `predict` reads an image file the same
way (attncnn.data.image_input, fit "crop" with that ratio), up to resampling differences.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attncnn.data.dataset import ArrayDataset

RATIO = (3 / 4, 4 / 3)
TRIES = 10
CHUNK = 256            # images resized per interpolate call in centre_view


def random_boxes(gen: torch.Generator, shape: tuple[int, ...], height: int, width: int,
                 scale: tuple[float, float], ratio: tuple[float, float] = RATIO) -> torch.Tensor:
    """float32 [*shape, 4] boxes (x0, y0, w, h) in pixels inside a height x width image: area
    uniform in scale x image area, log aspect ratio uniform in log(ratio); of TRIES draws the
    first that fits, else the whole image."""
    area = height * width
    n = math.prod(shape)
    target = area * torch.empty(n, TRIES).uniform_(scale[0], scale[1], generator=gen)
    log_ratio = torch.empty(n, TRIES).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                               generator=gen)
    aspect = log_ratio.exp()
    w = (target * aspect).sqrt()
    h = (target / aspect).sqrt()
    fits = (w <= width) & (h <= height)
    first = fits.int().argmax(1)                     # the first fitting try (0 if none fits)
    pick = torch.arange(n)
    w, h, found = w[pick, first], h[pick, first], fits.any(1)
    w = torch.where(found, w, torch.full_like(w, width))
    h = torch.where(found, h, torch.full_like(h, height))
    where = torch.rand(n, 2, generator=gen)
    x0 = where[:, 0] * (width - w)
    y0 = where[:, 1] * (height - h)
    return torch.stack([x0, y0, w, h], 1).view(*shape, 4)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, mirror: torch.Tensor,
                  size: int) -> torch.Tensor:
    """float32 [B, C, size, size] (pixel units, 0-255): box i of images[i] resized to size,
    mirrored left-right where mirror[i]. images uint8 [B, C, H, W]; boxes [B, 4] (x0, y0, w, h)."""
    b, _, h, w = images.shape
    boxes = boxes.to(images.device, torch.float32)
    x0, y0, bw, bh = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    sign = 1 - 2 * mirror.to(images.device, torch.float32)
    theta[:, 0, 0] = bw / w * sign                  # normalised coordinates, align_corners=False
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def centre_crop_box(height: int, width: int, size: int, crop_ratio: float) -> tuple[int, int]:
    """(resized height, resized width) of an image whose shorter side goes to
    round(size / crop_ratio), as image_input.resize_centre_crop sizes it."""
    side = max(size, round(size / crop_ratio))
    scale = side / min(height, width)
    return max(side, round(height * scale)), max(side, round(width * scale))


def centre_view(data: ArrayDataset, size: int, crop_ratio: float) -> ArrayDataset:
    """`data` with every image's shorter side resized to size / crop_ratio (bicubic,
    antialiased) and the centred size x size crop taken: the evaluation input."""
    n, _, h, w = data.images.shape
    if (h, w) == (size, size) and crop_ratio == 1:
        return data
    rh, rw = centre_crop_box(h, w, size, crop_ratio)
    top, left = (rh - size) // 2, (rw - size) // 2
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(0, n, CHUNK):
        chunk = data.images[i:i + CHUNK].float()
        if (rh, rw) != (h, w):
            chunk = F.interpolate(chunk, size=(rh, rw), mode="bicubic", antialias=True,
                                  align_corners=False)
        out[i:i + CHUNK] = chunk[:, :, top:top + size, left:left + size].round().clamp_(0, 255)
    return ArrayDataset(out, data.labels, data.classes, None, data.name, data.mean, data.std,
                        dict(data.info))

"""A decoded data set held as tensors: the unit every small-image reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ArrayDataset:
    """N decoded images with labels.

    images: uint8 [N, 3, H, W] (RGB, channels first, on CPU until a loader moves it)
    labels: int64 [N]
    classes: class names, index = label
    boxes: float32 [N, 4] object boxes (x0, y0, x1, y1) in pixels, or None
    name: how results should name the data, e.g. "CIFAR-10 (JPEG q75 copy)"
    mean, std: per-channel normalisation in [0, 1] units
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    boxes: torch.Tensor | None = None
    name: str = ""
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    info: dict = field(default_factory=dict)  # e.g. {"skipped_corrupt": 3}

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be [N={len(self.images)}], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor) -> "ArrayDataset":
        boxes = None if self.boxes is None else self.boxes[index]
        return ArrayDataset(self.images[index], self.labels[index], self.classes, boxes,
                            self.name, self.mean, self.std, dict(self.info))

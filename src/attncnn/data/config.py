"""What a run says about its data (the `data:` section of a config)."""
from __future__ import annotations

from dataclasses import dataclass

LABEL_MODES = ("fine", "coarse")  # cifar100: 100 fine classes or 20 superclasses


@dataclass
class DataConfig:
    name: str = "digits"            # a registered source: digits, cifar10, cifar100, folder, imagenet
    root: str | None = None         # file or folder of the data (None: the source's default)
    display_name: str | None = None # how results name the data (None: the source's own name)
    train_split: str = "train"
    eval_split: str = "test"        # "val" holds out `val_fraction` of train instead
    val_fraction: float = 0.0       # share of train held out as "val" (stratified, seeded)
    train_subset: int | float | None = None  # train on a stratified, seeded subset: a count
                                    # of images (int) or a share of each class (float, (0, 1])
    batch_size: int = 128           # global batch (split across ranks)
    eval_batch_size: int = 512
    augment: bool = True            # train only: random crop (pad 4) + horizontal flip
    crop_padding: int = 4
    flip: bool = True
    eval_flip: bool = False         # eval: average the logits of each image and its mirror (flip TTA)
    image_size: int | None = None   # folder: resize all images to this square; imagenet: crop (224)
    workers: int = 4                # large-image sources: DataLoader workers
    cache_dir: str | None = None    # decoded-tensor cache (default ~/.cache/attncnn)
    skip_corrupt: bool = False      # skip (and count) corrupt images instead of failing
    download: bool = False          # fetch official CIFAR archives when online
    label_mode: str = "fine"        # cifar100: fine (100 classes) | coarse (20 superclasses)
    seed: int = 0                   # data order and augmentation

"""What a run says about its data (the `data:` section of a config), and its checks."""
from __future__ import annotations

from dataclasses import dataclass

from attncnn.errors import AttncnnError, check_choice

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

    def validate(self, source: str = "config") -> None:
        """Refuse impossible values in one AttncnnError line naming `source` and the key;
        split names are checked against the source's own (where it has a fixed set) and
        whether it streams, without reading any data."""
        from attncnn.data.sources import is_streaming, source_names, source_splits

        def bad(key, why):
            raise AttncnnError(f"{source}: data.{key} {why}")

        if not 0 <= self.seed < 2**32:
            bad("seed", f"must be in [0, 2**32), got {self.seed}")
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("crop_padding", "workers"):
            if getattr(self, key) < 0:
                bad(key, f"must be >= 0, got {getattr(self, key)}")
        check_choice(self.label_mode, LABEL_MODES, f"{source}: data.label_mode")
        splits = source_splits(self.name)   # None: splits are folder names, anything goes
        if splits is not None:
            check_choice(self.train_split, splits, f"{source}: data.train_split")
            # "val" is carved out of train (data.val_fraction), so every such source has it
            check_choice(self.eval_split, (*splits, "val"), f"{source}: data.eval_split")
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        subset = self.train_subset
        if subset is not None:
            if isinstance(subset, int) and subset < 1 or \
                    isinstance(subset, float) and not 0 < subset <= 1:  # NaN too
                bad("train_subset", f"must be a count (an integer >= 1) or a fraction in "
                                    f"(0, 1], got {subset}")
            if self.name in source_names() and is_streaming(self.name):
                bad("train_subset", f"is not supported for {self.name!r}, which streams "
                                    f"from disk")
        if self.image_size is not None and self.image_size < 1:
            bad("image_size", f"must be >= 1 (or null), got {self.image_size}")

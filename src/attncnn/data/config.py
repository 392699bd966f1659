"""What a run says about its data (the `data:` section of a config), and its checks."""
from __future__ import annotations

from dataclasses import dataclass

from attncnn.errors import AttncnnError, check_choice

LABEL_MODES = ("fine", "coarse")  # cifar100: 100 fine classes or 20 superclasses
IMAGE_FITS = ("resize", "crop")
# What decides the pixels a model sees and the names of its classes: recorded in the weights
# (summary.data_input), so that `eval` and `predict` prepare images as training did.
INPUT_KEYS = ("image_size", "image_fit", "train_crop", "crop_size", "eval_crop_ratio",
              "class_names")
TRAIN_CROPS = ("pad", "random_resized")
PAD_MODES = ("zeros", "reflect")


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
    pad_mode: str = "zeros"         # the pad the crops are taken from: zeros | reflect
    flip: bool = True
    eval_flip: bool = False         # eval: average the logits of each image and its mirror (flip TTA)
    eval_translate: int = 0         # eval: t > 0 also averages in two copies shifted t px
                                    # diagonally (reflection-padded), weight 1/2 (airbench's TTA)
    image_size: int | None = None   # folder: decode all images to this square; imagenet: crop (224)
    image_fit: str = "resize"       # folder, how a decoded image fits image_size: "resize" the
                                    # whole image (aspect not kept), or "crop": shorter side to
                                    # image_size, then the centre square
    train_crop: str = "pad"         # "pad": crop_padding zero pad + random crop of the image's
                                    # size; "random_resized": ImageNet's random box of crop_scale
                                    # of the area (aspect 3/4-4/3) resized to crop_size
    crop_size: int | None = None    # random_resized: the model's input side (None: image side);
                                    # eval: shorter side to crop_size / eval_crop_ratio, centre crop
    crop_scale: tuple[float, float] = (0.08, 1.0)
    eval_crop_ratio: float = 0.875
    class_names: dict[str, str] | None = None  # folder: display name per class folder name
    workers: int = 4                # large-image sources: DataLoader workers
    cache_dir: str | None = None    # decoded-tensor cache (default ~/.cache/attncnn)
    skip_corrupt: bool = False      # skip (and count) corrupt images instead of failing
    download: bool = False          # fetch official CIFAR archives when online
    label_mode: str = "fine"        # cifar100: fine (100 classes) | coarse (20 superclasses)
    seed: int = 0                   # data order and augmentation

    def input_settings(self) -> dict:
        """The INPUT_KEYS of this config, JSON-ready: what weights record of their data."""
        out = {k: getattr(self, k) for k in INPUT_KEYS}
        return {k: dict(v) if isinstance(v, dict) else v for k, v in out.items()}

    def with_input_settings(self, meta: dict) -> tuple["DataConfig", list[str]]:
        """This config with the input settings recorded in weights metadata `meta`
        (summary.data_input) where this one leaves them at their defaults, when the weights
        were trained on this config's source; and the keys so taken."""
        import dataclasses

        training = meta.get("summary") or {}
        if training.get("data_source") != self.name:
            return self, []
        recorded = training.get("data_input")
        default = DataConfig()
        taken = {k: v for k, v in (recorded or {}).items()
                 if k in INPUT_KEYS and getattr(self, k) == getattr(default, k)
                 and v != getattr(self, k)}
        return dataclasses.replace(self, **taken), sorted(taken)

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
        for key in ("crop_padding", "workers", "eval_translate"):
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
        check_choice(self.image_fit, IMAGE_FITS, f"{source}: data.image_fit")
        check_choice(self.pad_mode, PAD_MODES, f"{source}: data.pad_mode")
        check_choice(self.train_crop, TRAIN_CROPS, f"{source}: data.train_crop")
        if self.train_crop != "pad" and self.name in source_names() and is_streaming(self.name):
            bad("train_crop", f"is for in-memory sources; {self.name!r} makes its own "
                              f"random-resized crops (data.image_size)")
        if self.crop_size is not None and self.crop_size < 1:
            bad("crop_size", f"must be >= 1 (or null), got {self.crop_size}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            bad("crop_scale", f"must be [low, high] with 0 < low <= high <= 1, got "
                              f"{list(self.crop_scale)}")
        if not 0 < self.eval_crop_ratio <= 1:
            bad("eval_crop_ratio", f"must be in (0, 1], got {self.eval_crop_ratio}")
        if self.class_names is not None:
            if self.name != "folder":
                bad("class_names", f"names the class folders of a 'folder' source, not of "
                                   f"{self.name!r}")
            names = list(self.class_names.values())
            if any(not isinstance(v, str) or not v for v in names):
                bad("class_names", "must map each class folder to a non-empty name")
            if len(set(names)) != len(names):
                twice = sorted({v for v in names if names.count(v) > 1})
                bad("class_names", f"gives two classes one name: {', '.join(twice)}")

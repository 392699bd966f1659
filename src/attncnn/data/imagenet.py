"""ImageNet-style data: large JPEGs streamed from disk through DataLoader workers.

Layout (root = data.root):
    root/train/<class>/<image>               training images, class = folder name (e.g. n01440764)
    root/<eval split>/<class>/<image>        evaluation images in class folders, or
    root/<eval split>/<image> + a label file flat evaluation images, labelled by one of
        root/<eval split>/labels.txt, root/<eval split>_labels.txt   lines "<file name> <class>"
        root/LOC_<eval split>_solution.csv                           Kaggle's ImageNet CSV
    where <class> is a train class folder name or its 0-based index in sorted order.

Training crops a random region of 8-100 % of the area with aspect ratio 3/4-4/3, resizes it to
`image_size` (224) and flips it half the time; evaluation resizes the short side to
image_size / 0.875 (256) and takes the centre crop. All with PIL (no torchvision). Files are
read by `attncnn.data.image_input.open_rgb`, as predict and explain read them (EXIF
orientation, 16-bit greyscale scaled, transparent pixels on white). Every random
draw comes from a generator seeded by (seed, epoch, sample index), so batches do not depend on
the number of workers or on which worker served a sample; a run resumed at step k of an epoch
sees the batches an uninterrupted run would, and rank r of N takes its slice of the global batch.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from attncnn.data.config import DataConfig
from attncnn.data.decode import image_suffixes
from attncnn.data.image_input import open_rgb
from attncnn.data.loader import ShardedCounts, normalisation, seeded_generator, train_seed
from attncnn.data.sources import Loaders, register_source
from attncnn.errors import AttncnnError

MEAN = (0.485, 0.456, 0.406)   # the customary ImageNet statistics
STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def _images_in(folder: Path) -> list[Path]:
    suffixes = image_suffixes()
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in suffixes and f.is_file()
                  and not f.name.startswith("."))


def scan_class_folders(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list]:
    """(classes, [(path, label)]) of split_dir/<class>/...; `classes` fixes the label order."""
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise AttncnnError(f"{split_dir}: no class folders; expected {split_dir}/<class>/<image>")
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise AttncnnError(f"{split_dir}: class folder(s) {', '.join(unknown[:5])} not among the "
                           "training classes")
    samples = []
    for name in found:
        files = _images_in(split_dir / name)
        if not files:
            raise AttncnnError(f"{split_dir / name}: class folder has no images")
        samples.extend((f, classes.index(name)) for f in files)
    return classes, samples


def _label_file(root: Path, split: str) -> Path | None:
    for p in (root / split / "labels.txt", root / f"{split}_labels.txt",
              root / f"LOC_{split}_solution.csv"):
        if p.is_file():
            return p
    return None


def read_label_file(path: Path, classes: list[str]) -> dict[str, int]:
    """{file stem: label} from "name class" lines or a LOC_*_solution.csv."""
    index = {c: i for i, c in enumerate(classes)}

    def label_of(token: str, line: int) -> int:
        if token in index:
            return index[token]
        if token.isdigit() and int(token) < len(classes):
            return int(token)
        raise AttncnnError(f"{path}:{line}: unknown class {token!r} (not a training class folder "
                           f"nor an index below {len(classes)})")

    labels = {}
    with open(path, newline="") as f:
        if path.suffix == ".csv":
            rows = csv.reader(f)
            next(rows, None)                                   # ImageId,PredictionString
            for n, row in enumerate(rows, 2):
                if len(row) < 2 or not row[1].split():
                    raise AttncnnError(f"{path}:{n}: expected 'ImageId,<class> ...'")
                labels[Path(row[0]).stem] = label_of(row[1].split()[0], n)
        else:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                if len(parts) != 2:
                    raise AttncnnError(f"{path}:{n}: expected '<file name> <class>', got {line.strip()!r}")
                labels[Path(parts[0]).stem] = label_of(parts[1], n)
    return labels


def scan_flat(split_dir: Path, label_file: Path, classes: list[str]) -> list:
    labels = read_label_file(label_file, classes)
    samples = []
    for f in _images_in(split_dir):
        if f.stem not in labels:
            raise AttncnnError(f"{f}: no label for it in {label_file}")
        samples.append((f, labels[f.stem]))
    if not samples:
        raise AttncnnError(f"{split_dir}: no images")
    return samples


class ImageFiles(torch.utils.data.Dataset):
    """Samples [(path, label)] read by key (index, epoch) -> (uint8 [3, S, S], label, index, ok).

    ok is False where the file could not be decoded (the image is then zeros): the loader,
    in the main process, raises a one-line error naming the file or skips it.
    """

    def __init__(self, samples: list, size: int, train: bool, flip: bool, seed: int):
        self.samples, self.size, self.train, self.flip, self.seed = samples, size, train, flip, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        path, label = self.samples[index]
        try:
            img = open_rgb(path)   # the pixels predict/explain read from this file
            if self.train:
                gen = seeded_generator(self.seed, epoch, index, 11)
                img = random_resized_crop(img, self.size, gen)
                if self.flip and torch.rand(1, generator=gen).item() < 0.5:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                img = resize_centre_crop(img, self.size)
            x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
            return x, label, index, True
        except Exception:  # noqa: BLE001 - reported by name in the main process
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), label, index, False


def random_resized_crop(img: Image.Image, size: int, gen: torch.Generator) -> Image.Image:
    """A random region of CROP_SCALE of the area and CROP_RATIO aspect, resized to size x size
    (the Inception crop); falls back to the largest centred crop of allowed aspect."""
    w, h = img.size
    area = w * h
    u = torch.rand(10, 4, generator=gen).tolist()
    for a, r, x, y in u:
        target = area * (CROP_SCALE[0] + a * (CROP_SCALE[1] - CROP_SCALE[0]))
        ratio = math.exp(math.log(CROP_RATIO[0]) + r * (math.log(CROP_RATIO[1]) - math.log(CROP_RATIO[0])))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(x * (w - cw + 1)), int(y * (h - ch + 1))
            return img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    ratio = w / h
    cw, ch = (w, round(w / CROP_RATIO[0])) if ratio < CROP_RATIO[0] else (
        (round(h * CROP_RATIO[1]), h) if ratio > CROP_RATIO[1] else (w, h))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def resize_centre_crop(img: Image.Image, size: int) -> Image.Image:
    """Short side to size / 0.875, then the centred size x size crop."""
    short = round(size / 0.875)
    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    x0, y0 = (nw - size) // 2, (nh - size) // 2
    return img.crop((x0, y0, x0 + size, y0 + size))


class _Steps(torch.utils.data.Sampler):
    """The (index, epoch) keys of this rank's batches, steps start_step.. of one epoch."""

    def __init__(self, batches: list[list[int]], epoch: int):
        self.batches, self.epoch = batches, epoch

    def __iter__(self):
        for b in self.batches:
            yield [(i, self.epoch) for i in b]

    def __len__(self):
        return len(self.batches)


class StreamingLoader(ShardedCounts):
    """A `BatchLoader` over an `ImageFiles`: epoch(epoch, start_step) yields (x float
    [b, 3, S, S] normalised on `device`, y int64 [b]). Its seed is the files' own: one seed
    draws both the order and the crops."""

    def __init__(self, files: ImageFiles, batch_size: int, *, train: bool, device,
                 rank: int, world_size: int, workers: int, channels_last: bool, skip_corrupt: bool,
                 data):
        if train and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must divide evenly over {world_size} ranks")
        self.files, self.batch_size, self.train = files, batch_size, train
        self.device = torch.device(device)
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.channels_last, self.skip_corrupt, self.data = channels_last, skip_corrupt, data
        self.skipped: list[str] = []
        self.mean, self.std = normalisation(data.mean, data.std, self.device)

    @property
    def seed(self) -> int:
        return self.files.seed

    @property
    def num_samples(self) -> int:
        """Images in the split, every rank's."""
        return len(self.files)

    def _batches(self, epoch: int, start_step: int) -> list[list[int]]:
        n = len(self.files)
        if self.train:
            order = torch.randperm(n, generator=seeded_generator(self.seed, epoch)).tolist()
            local = self.batch_size // self.world_size
            starts = (s * self.batch_size + self.rank * local for s in range(start_step, len(self)))
            return [order[lo:lo + local] for lo in starts]
        mine = list(range(self.rank, n, self.world_size))
        return [mine[s * self.batch_size:(s + 1) * self.batch_size] for s in range(start_step, len(self))]

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.files, batch_sampler=_Steps(self._batches(epoch, start_step), epoch),
            num_workers=self.workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None)
        for images, labels, index, ok in loader:
            if not bool(ok.all()):
                bad = [str(self.files.samples[i][0]) for i in index[~ok].tolist()]
                if not self.skip_corrupt:
                    raise AttncnnError(f"{bad[0]}: cannot decode image; fix or remove it, or set "
                                       "data.skip_corrupt: true to skip corrupt images")
                self.skipped.extend(bad)
                self.data.info["skipped_corrupt"] = len(set(self.skipped))
                print(f"attncnn: warning: skipped corrupt image {bad[0]}", file=sys.stderr)
                images, labels = images[ok], labels[ok]
            x = images.to(self.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, labels.to(self.device, non_blocking=True)

    def __iter__(self):
        return self.epoch(0)


class StreamInfo:
    """The data set a source's two loaders share (their `data`): classes, name, mean, std, and
    info["skipped_corrupt"], the corrupt images skipped so far (data.skip_corrupt)."""

    def __init__(self, classes, name, size):
        self.classes, self.name, self.mean, self.std = classes, name, MEAN, STD
        self.size, self.info = size, {"skipped_corrupt": 0}

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def scan(cfg: DataConfig) -> tuple[list[str], list, list]:
    """(classes, train samples, eval samples) of the layout at cfg.root."""
    if not cfg.root:
        raise AttncnnError("data.root must name the ImageNet folder (holding train/ and val/)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise AttncnnError(f"{root}: ImageNet root folder not found")
    train_dir, eval_dir = root / cfg.train_split, root / cfg.eval_split
    for d in (train_dir, eval_dir):
        if not d.is_dir():
            raise AttncnnError(f"{d}: split folder not found")
    classes, train = scan_class_folders(train_dir)
    label_file = _label_file(root, cfg.eval_split)
    if label_file is not None:
        evaluation = scan_flat(eval_dir, label_file, classes)
    elif any(d.is_dir() for d in eval_dir.iterdir()):
        evaluation = scan_class_folders(eval_dir, classes)[1]
    else:
        raise AttncnnError(f"{eval_dir}: images are not in class folders and there is no label "
                           f"file ({eval_dir}/labels.txt, {root}/{cfg.eval_split}_labels.txt or "
                           f"{root}/LOC_{cfg.eval_split}_solution.csv)")
    return classes, train, evaluation


@register_source("imagenet", streaming=True)
def imagenet_loaders(cfg: DataConfig, device="cpu", rank: int = 0, world_size: int = 1,
                     channels_last: bool = False, run_seed: int = 0) -> Loaders:
    """Train and eval `StreamingLoader`s over the ImageNet layout at cfg.root; the training
    order and crops follow `train_seed(cfg.seed, run_seed)`, as every source's do."""
    if cfg.eval_split == "val" and cfg.val_fraction > 0:
        raise AttncnnError("imagenet: data.val_fraction is not supported; evaluate on the val folder")
    classes, train, evaluation = scan(cfg)
    size = cfg.image_size or 224
    name = cfg.display_name or "ImageNet"
    info = StreamInfo(classes, name, size)
    common = dict(device=device, rank=rank, world_size=world_size, workers=cfg.workers,
                  channels_last=channels_last, skip_corrupt=cfg.skip_corrupt, data=info)
    return Loaders(
        train=StreamingLoader(ImageFiles(train, size, cfg.augment, cfg.flip,
                                         train_seed(cfg.seed, run_seed)),
                              cfg.batch_size, train=True, **common),
        eval=StreamingLoader(ImageFiles(evaluation, size, False, False, cfg.seed),
                             cfg.eval_batch_size, train=False, **common),
        classes=classes, name=name, mean=MEAN, std=STD, input_size=(3, size, size))

"""Image files -> model input: the one way attncnn turns an image file into pixels.

`predict`, `explain` (on image files), the `folder` reader (training, and `eval` on folder
data) and the `imagenet` reader all read files here (`open_rgb`), so one file reaches one
model as the same pixels.

    spec = ImageInput.for_weights(meta)       # meta: the weights metadata
    pixels = spec.read("photo.jpg")           # uint8 [3, H, W]
    x = spec.normalise(torch.stack([...]))    # float, with the weights' mean/std

Reading a file (`open_rgb`):
1. decode it now (a truncated file fails here); `read` turns any failure into one line,
   "FILE: not a readable image (REASON)";
2. turn it by its EXIF orientation (a phone photo stored sideways comes out upright; an
   EXIF block that cannot be parsed is ignored, the pixels are still good);
3. make it RGB: greyscale repeated, 16-bit greyscale scaled to 8 bits (v / 257), palette
   expanded, CMYK and YCbCr converted, transparent pixels (alpha channel, palette or PNG
   tRNS transparency) composited on white, as image viewers show them.

Fitting it to the input size H x W in the weights (`fit`), the way the weights' training
data was prepared, as the weights record it (`summary.data_source`):
- "resize": the whole image resized to W x H (bicubic), aspect not kept. The `folder`
  reader decodes training images exactly so (`data.image_size`): weights trained on
  `folder` data. Folder weights that record `data_input.image_fit: crop` (shorter side,
  centre square) take "crop" with ratio 1, and those trained on random-resized crops
  (`data_input.train_crop`) take "crop" with the run's `eval_crop_ratio` (bicubic), as
  their evaluation saw the images (attncnn.data.crops, there with an antialiased resize).
- "crop": the shorter side resized to H / crop_ratio, then the centred H x W crop.
  `imagenet` weights: crop_ratio 0.875, bilinear (its evaluation transform, 256 -> 224).
  Any other source (cifar10, cifar100, digits: fixed-size images with no resizing of
  their own) and weights that do not record their source (written before attncnn
  recorded it, or shipped `--pretrained` weights): by size, crop_ratio 1 and bicubic up
  to 64 px (the whole image's centre square), 0.875 and bilinear above.
An explicit crop_ratio (`--crop-ratio`) means "crop" with that ratio, whatever the source.
Normalising: (pixels - 255 mean) / (255 std), as the data loader normalises batches.
"""
from __future__ import annotations

import glob
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps

from attncnn.errors import AttncnnError, first_line

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm"}
SMALL = 64                      # "small-image" models (CIFAR-style) up to this many pixels
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_DEEP_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """The image in `source` (a path or the file's bytes), decoded, turned by its EXIF
    orientation and converted to RGB (see the module docstring). Raises what PIL raises."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        img.load()
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
            pass
        if img.mode in _DEEP_GREY:
            grey = np.asarray(img).astype(np.float64) / 257
            img = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8))
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img.alpha_composite(rgba)
        return img.convert("RGB") if img.mode != "RGB" else img.copy()


def resize_whole(img: Image.Image, size: tuple[int, int], resample: str = "bicubic") -> Image.Image:
    """`img` resized to size = (H, W), aspect not kept (unchanged if already that size)."""
    h, w = size
    return img if img.size == (w, h) else img.resize((w, h), RESAMPLE[resample])


def resize_centre_crop(img: Image.Image, size: tuple[int, int], crop_ratio: float,
                       resample: str) -> Image.Image:
    """Scale `img` to cover (H / crop_ratio, W / crop_ratio), then take the centred H x W."""
    h, w = size
    th, tw = max(1, round(h / crop_ratio)), max(1, round(w / crop_ratio))
    iw, ih = img.size
    scale = max(tw / iw, th / ih)
    new = (max(tw, round(iw * scale)), max(th, round(ih * scale)))
    if new != img.size:
        img = img.resize(new, RESAMPLE[resample])
    left, top = (new[0] - w) // 2, (new[1] - h) // 2
    return img.crop((left, top, left + w, top + h))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 [3, H, W] of an RGB image."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32, (x - 255 mean) / (255 std) per channel."""
    m = torch.tensor(mean, device=images.device).view(3, 1, 1) * 255
    s = torch.tensor(std, device=images.device).view(3, 1, 1) * 255
    return (images.float() - m) / s


def unreadable(path, err: BaseException) -> AttncnnError:
    """The one-line error for a file PIL could not read."""
    reason = first_line(err).replace(f" '{path}'", "")  # PIL repeats the file name
    return AttncnnError(f"{path}: not a readable image ({reason})")


@dataclass(frozen=True)
class ImageInput:
    """How image files become the input of one model: size (H, W); fit "resize" or "crop"
    (with crop_ratio); resample "bicubic" or "bilinear"; the model's mean and std."""

    size: tuple[int, int]
    fit: str
    crop_ratio: float
    resample: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def for_weights(cls, meta: dict, crop_ratio: float | None = None) -> "ImageInput":
        """The rule of the module docstring for weights metadata `meta` (input_size, mean,
        std, and summary.data_source when recorded); crop_ratio overrides it."""
        if crop_ratio is not None and not 0 < crop_ratio <= 1:
            raise AttncnnError(f"crop ratio must be in (0, 1], got {crop_ratio}")
        _, h, w = (int(v) for v in meta["input_size"])
        source = (meta.get("summary") or {}).get("data_source")
        recorded = (meta.get("summary") or {}).get("data_input") or {}
        small = max(h, w) <= SMALL
        if source == "folder" and recorded.get("train_crop") == "random_resized":
            fit, ratio, resample = "crop", float(recorded.get("eval_crop_ratio", 0.875)), "bicubic"
        elif source == "folder" and recorded.get("image_fit") == "crop":
            fit, ratio, resample = "crop", 1.0, "bicubic"
        elif source == "folder":
            fit, ratio, resample = "resize", 1.0, "bicubic"
        elif source == "imagenet":
            fit, ratio, resample = "crop", 0.875, "bilinear"
        else:
            fit, ratio, resample = ("crop", 1.0, "bicubic") if small else ("crop", 0.875, "bilinear")
        if crop_ratio is not None:
            fit, ratio = "crop", float(crop_ratio)
        return cls((h, w), fit, ratio, resample, tuple(meta["mean"]), tuple(meta["std"]))

    def geometry(self) -> tuple:
        """What decides the pixels (mean/std aside): equal geometry, equal `read`."""
        return self.size, self.fit, self.crop_ratio, self.resample

    def describe(self) -> str:
        h, w = self.size
        if self.fit == "resize":
            return f"resized to {w}x{h} ({self.resample})"
        return (f"shorter side to {round(min(h, w) / self.crop_ratio)}, centre {w}x{h} crop "
                f"({self.resample})")

    def fit_image(self, img: Image.Image) -> Image.Image:
        if self.fit == "resize":
            return resize_whole(img, self.size, self.resample)
        return resize_centre_crop(img, self.size, self.crop_ratio, self.resample)

    def read(self, path: str | os.PathLike) -> torch.Tensor:
        """uint8 [3, H, W] of the file; AttncnnError (one line naming it) if unreadable."""
        try:
            return to_tensor(self.fit_image(open_rgb(path)))
        except Exception as err:  # PIL raises many types for bad files; all mean "not an image"
            raise unreadable(path, err) from None

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return normalise(images, self.mean, self.std)

    def prepare(self, path: str | os.PathLike) -> torch.Tensor:
        """float [3, H, W]: `read`, then `normalise`."""
        return self.normalise(self.read(path))


@dataclass
class InputList:
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # arguments that matched nothing


def collect_images(inputs: Iterable[str]) -> InputList:
    """Expand command-line inputs into files, in order, each once.

    - a file is taken whatever its name (so a non-image named explicitly is reported);
    - a folder is searched recursively for files with an image extension (others, and
      hidden files and folders, are skipped silently), sorted;
    - anything else is treated as a glob pattern (`*`, `?`, `[...]`, `**`), sorted; a
      pattern or path that matches nothing is listed in `missing`.
    """
    found = InputList()
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            found.files.append(path)

    for item in inputs:
        if os.path.isfile(item):
            add(item)
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                        add(os.path.join(root, name))
        else:
            matches = sorted(m for m in glob.glob(item, recursive=True) if os.path.isfile(m))
            if not matches:
                found.missing.append(item)
            for m in matches:
                add(m)
    return found


def collect_images_or_refuse(inputs: list[str]) -> InputList:
    """`collect_images` for a command (predict, explain): one AttncnnError when no file is
    found (naming what matched nothing, else where no image was found); otherwise each input
    that matched nothing is named on stderr, and the caller counts `missing` as skipped."""
    found = collect_images(inputs)
    if not found.files:
        if len(found.missing) == len(inputs):
            raise AttncnnError(f"no such file or no match: {', '.join(found.missing)}")
        raise AttncnnError(f"no image files found in {' '.join(inputs)}")
    for item in found.missing:
        print(f"attncnn: no such file or no match: {item}", file=sys.stderr, flush=True)
    return found

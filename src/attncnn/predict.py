"""Classify image files with a weights file: find the files, prepare them as the model
expects, run them in batches, and return the top-k classes with probabilities.

Preparation (`prepare_image`), for any size or mode of image:
    decode -> apply the EXIF orientation -> RGB -> resize the shorter side to
    round(S / crop_ratio) -> centre crop S x S -> float [3, S, S], normalised with the
    mean/std stored in the weights,
where S is the input size stored in the weights. The default crop_ratio is 1 for small
inputs (<= 64 px: CIFAR-style models see whole images) and 0.875 for larger ones (the
usual ImageNet evaluation: resize 256, crop 224).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from attncnn.errors import AttncnnError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm"}


@dataclass
class Prediction:
    """The top-k of one file: `classes[i]` (label index `indices[i]`) with `probs[i]`."""
    file: str
    classes: list[str]
    indices: list[int]
    probs: list[float]

    def to_dict(self) -> dict:
        return {"file": self.file,
                "top": [{"class": c, "index": i, "prob": p}
                        for c, i, p in zip(self.classes, self.indices, self.probs)]}


@dataclass
class Failure:
    """A file that could not be classified, and why (one line)."""
    file: str
    reason: str


@dataclass
class InputList:
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # arguments that matched nothing


def collect_images(inputs: Iterable[str]) -> InputList:
    """Expand command-line inputs into files, in order, each once.

    - a file is taken whatever its name (so a non-image named explicitly is reported);
    - a folder is searched recursively for files with an image extension (others, and
      hidden files, are skipped silently), sorted;
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


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AttncnnError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttncnnError(f"device {name!r} requested but CUDA is not available")
    return device


def default_crop_ratio(size: int) -> float:
    return 1.0 if size <= 64 else 0.875


def prepare_image(path: str | os.PathLike, size: int, mean, std,
                  crop_ratio: float | None = None) -> torch.Tensor:
    """Decode `path` and make it what the model expects: float [3, size, size], normalised.

    Raises AttncnnError (one line naming the file) when the file is not a readable image.
    """
    from PIL import Image, ImageOps

    ratio = default_crop_ratio(size) if crop_ratio is None else crop_ratio
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # transparent pixels carry arbitrary colours: show them on white, as viewers do
                rgba = img.convert("RGBA")
                img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img.alpha_composite(rgba)
            img = img.convert("RGB")
            w, h = img.size
            short = max(1, round(size / ratio))
            scale = short / min(w, h)
            new = (max(short, round(w * scale)), max(short, round(h * scale)))
            if new != (w, h):  # the data readers' filters: bicubic for small images, bilinear
                resample = Image.Resampling.BICUBIC if size <= 64 else Image.Resampling.BILINEAR
                img = img.resize(new, resample)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            img = img.crop((left, top, left + size, top + size))
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except Exception as err:  # PIL raises many types for bad files; all mean "not an image"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = reason.replace(f" '{path}'", "")  # PIL repeats the file name
        raise AttncnnError(f"{path}: not a readable image ({reason})") from None
    x = data.view(size, size, 3).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@torch.no_grad()
def predict_files(model: torch.nn.Module, meta: dict, files: Iterable[str], *, top_k: int = 5,
                  batch_size: int = 64, tta: str | None = None, device="cpu",
                  crop_ratio: float | None = None) -> Iterator[Prediction | Failure]:
    """Classify `files` in batches; yields a Prediction or a Failure per file, in order.

    meta: the weights metadata (classes, mean, std, input_size).
    tta="flip": average the class probabilities of the image and its mirror image.
    """
    if tta not in (None, "none", "flip"):
        raise AttncnnError(f"unknown --tta {tta!r}; choose none or flip")
    if batch_size < 1:
        raise AttncnnError(f"batch size must be >= 1, got {batch_size}")
    if top_k < 1:
        raise AttncnnError(f"top_k must be >= 1, got {top_k}")
    classes = meta["classes"]
    _, h, w = meta["input_size"]
    if h != w:
        raise AttncnnError(f"weights expect a {h}x{w} input; only square inputs are supported")
    k = min(top_k, len(classes))
    model.eval()

    pending: list[tuple[int, str, torch.Tensor]] = []      # prepared, not yet run
    results: dict[int, Prediction | Failure] = {}           # done, not yet handed out
    next_out = 0

    def run_batch():
        if pending:
            x = torch.stack([t for _, _, t in pending]).to(device)
            probs = torch.softmax(model(x).float(), dim=1)
            if tta == "flip":
                probs = (probs + torch.softmax(model(x.flip(3)).float(), dim=1)) / 2
            top = probs.topk(k, dim=1)
            for row, (i, f, _) in enumerate(pending):
                idx = top.indices[row].tolist()
                results[i] = Prediction(f, [classes[j] for j in idx], idx,
                                        [round(p, 6) for p in top.values[row].tolist()])
        pending.clear()

    for i, f in enumerate(files):
        try:
            pending.append((i, f, prepare_image(f, h, meta["mean"], meta["std"], crop_ratio)))
        except AttncnnError as err:
            results[i] = Failure(f, str(err))
        if len(pending) >= batch_size:
            run_batch()
        while next_out in results:  # hand results out in input order, as soon as known
            yield results.pop(next_out)
            next_out += 1
    run_batch()
    while next_out in results:
        yield results.pop(next_out)
        next_out += 1

"""Classify image files with a weights file: find the files, prepare them as the model
expects, run them in batches, and return the top-k classes with probabilities.

Files are read and fitted to the model by `attncnn.data.image_input` (EXIF orientation,
RGB, then resized as the weights' training data was: the whole image for weights trained
on `folder` data, else the shorter side and a centre crop), exactly as `explain` reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from attncnn.data.image_input import ImageInput, collect_images
from attncnn.errors import AttncnnError

__all__ = ["Failure", "Prediction", "collect_images", "predict_files"]


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


@torch.no_grad()
def predict_files(model: torch.nn.Module, meta: dict, files: Iterable[str], *, top_k: int = 5,
                  batch_size: int = 64, tta: str | None = None, device="cpu",
                  crop_ratio: float | None = None) -> Iterator[Prediction | Failure]:
    """Classify `files` in batches; yields a Prediction or a Failure per file, in order.

    meta: the weights metadata (classes, mean, std, input_size; summary.data_source picks
    how files are fitted, see `attncnn.data.image_input`); crop_ratio overrides that.
    tta="flip": average the class probabilities of the image and its mirror image.
    """
    if tta not in (None, "none", "flip"):
        raise AttncnnError(f"unknown --tta {tta!r}; choose none or flip")
    if batch_size < 1:
        raise AttncnnError(f"batch size must be >= 1, got {batch_size}")
    if top_k < 1:
        raise AttncnnError(f"top_k must be >= 1, got {top_k}")
    classes = meta["classes"]
    spec = ImageInput.for_weights(meta, crop_ratio)
    k = min(top_k, len(classes))
    model.eval()

    pending: list[tuple[int, str, torch.Tensor]] = []      # prepared, not yet run
    results: dict[int, Prediction | Failure] = {}           # done, not yet handed out
    next_out = 0

    def run_batch():
        if pending:
            x = spec.normalise(torch.stack([t for _, _, t in pending]).to(device))
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
            pending.append((i, f, spec.read(f)))
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

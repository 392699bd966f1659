"""Decode many small image files into one uint8 array, in parallel, with a quiet progress bar.

Readers hand over `(name, payload)` pairs, the payload being the file's bytes (from a tarball)
or its path; `decode_many` returns uint8 [N, 3, H, W] and which items were corrupt. Every image
is read as `attncnn.data.image_input` reads image files for `predict` and `explain` (EXIF
orientation applied, RGB, transparent pixels on white) and, when `image_size` is set, fitted
to image_size x image_size (bicubic): fit "resize", the whole image, aspect not kept (small,
square-ish data sets), which is the "resize" rule those commands apply to weights trained on
folder data; or fit "crop", the shorter side to image_size and the centre square (photos,
which a training run then crops further, attncnn.data.crops).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from attncnn.data.image_input import open_rgb, resize_centre_crop, resize_whole
from attncnn.errors import AttncnnError

# Below this many images a process pool costs more than it saves.
PARALLEL_MIN = 2000
CHUNK = 500


def image_suffixes() -> set[str]:
    """File suffixes PIL can open (".jpg", ".png", ".webp", ...), lower case."""
    return {s.lower() for s in Image.registered_extensions()}


def decode_one(payload: bytes | str | Path, image_size: int | None,
               fit: str = "resize") -> np.ndarray:
    """One image as uint8 [H, W, 3]. Raises whatever PIL raises on a corrupt file."""
    img = open_rgb(payload)                 # decodes now: a truncated file fails here
    if image_size and fit == "crop":
        img = resize_centre_crop(img, (image_size, image_size), 1.0, "bicubic")
    elif image_size:
        img = resize_whole(img, (image_size, image_size), "bicubic")
    return np.asarray(img, dtype=np.uint8)


def _decode_chunk(items: list[tuple[str, bytes | str]], image_size: int | None,
                  fit: str = "resize"):
    """[(array or None, error or None)] for a chunk; runs in a worker process."""
    out = []
    for name, payload in items:
        try:
            out.append((decode_one(payload, image_size, fit), None))
        except Exception as err:  # noqa: BLE001 - any failure to decode marks the file corrupt
            out.append((None, f"{type(err).__name__}: {err}".splitlines()[0]))
    return out


def decode_many(items: list[tuple[str, bytes | str]], image_size: int | None, workers: int = 2,
                desc: str = "decoding", fit: str = "resize",
                ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode `items` = [(name, bytes or path)], fitted to image_size by `fit` (module doc).

    Returns (images uint8 [K, 3, H, W], kept indices into items, [(name, error)] of the corrupt
    ones). All decoded images must have one size (set image_size to resize); otherwise an
    AttncnnError names the first file whose size differs.
    """
    from tqdm import tqdm

    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    workers = max(1, min(workers, os.cpu_count() or 1))
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not sys.stderr.isatty(), leave=False)
    results = []
    if workers == 1 or len(items) < PARALLEL_MIN:
        for chunk in chunks:
            results.extend(_decode_chunk(chunk, image_size, fit))
            bar.update(len(chunk))
    else:
        # fork where there is one: a spawned worker would re-import torch (seconds) first
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for chunk, done in zip(chunks, pool.map(_decode_chunk, chunks, [image_size] * len(chunks),
                                                           [fit] * len(chunks))):
                results.extend(done)
                bar.update(len(chunk))
    bar.close()

    kept, corrupt, arrays = [], [], []
    for i, ((name, _), (array, error)) in enumerate(zip(items, results)):
        if error is not None:
            corrupt.append((name, error))
            continue
        if arrays and array.shape != arrays[0].shape:
            first = items[kept[0]][0]
            raise AttncnnError(f"{name}: image is {array.shape[1]}x{array.shape[0]} but {first} is "
                               f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; set data.image_size to "
                               "resize all images to one size")
        kept.append(i)
        arrays.append(array)
    if not arrays:
        return np.zeros((0, 3, 0, 0), np.uint8), kept, corrupt
    return np.stack(arrays).transpose(0, 3, 1, 2).copy(), kept, corrupt

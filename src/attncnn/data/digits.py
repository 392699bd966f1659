"""digits-in-clutter: the embedded default data set (no download, generated in seconds, in memory).

Each 32x32 RGB image holds one real handwritten digit (scikit-learn's bundled UCI digits,
1797 8x8 scans), scaled up to 12-16 px and placed at a random position, among 3-5 fragments
cut from digits of OTHER classes. A fragment is a piece of a digit's strokes at the same
scale, so a model cannot classify by counting ink: it has to find the one whole digit. The
digit's box (x0, y0, x1, y1 in pixels, x1/y1 exclusive) is kept in `ArrayDataset.boxes`, so
attention maps can be scored for localisation. Canvas and ink colours are random (a dark canvas,
bright ink of any hue, for target and clutter alike), so colour says nothing about the label.
An earlier version drew both from the whole colour cube with either polarity: no model we
tried learned it within a CPU budget.

The data set is a fixed data set, like CIFAR: it is generated from `GENERATOR_SEED`, not from
`DataConfig.seed`, so runs with different seeds train and evaluate on the same images (the
run seed only changes order and augmentation). The source digits are split once per class
(80/20): test images are drawn, target and clutter alike, from digits train never saw.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from attncnn.data.config import DataConfig
from attncnn.data.dataset import ArrayDataset
from attncnn.data.sources import register_source
from attncnn.errors import AttncnnError

NAME = "digits-in-clutter (embedded, 32x32)"
SIZES = {"train": 6000, "test": 1500}
CANVAS = 32
DIGIT_PX = (12, 16)          # side of the scaled 8x8 digit, inclusive range
FRAGMENTS = (3, 5)           # clutter pieces per image, inclusive range
TEST_SHARE = 0.2             # of each class's source digits
GENERATOR_SEED = 2024
BACKGROUND = (0.0, 0.35)    # canvas colour range, per channel
INK = (0.55, 1.0)           # ink colour range, per channel (target and clutter alike)
CLASSES = [str(d) for d in range(10)]


@functools.lru_cache(maxsize=1)
def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as float32 [1797, 8, 8] in [0, 1] and int64 labels.

    Read straight from the CSV that ships inside scikit-learn: importing sklearn itself costs
    seconds, more than generating the whole data set."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise AttncnnError("the digits data set needs scikit-learn (pip install scikit-learn), "
                           "whose bundled digits.csv.gz it reads")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return (table[:, :64] / 16.0).reshape(-1, 8, 8), table[:, 64].astype(np.int64)


def _split_sources(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Disjoint source indices per split: TEST_SHARE of every class goes to test."""
    rng = np.random.default_rng(GENERATOR_SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * TEST_SHARE))
        test.append(idx[:k])
        train.append(idx[k:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _scaled(glyphs: np.ndarray) -> np.ndarray:
    """Every glyph at every side in DIGIT_PX, zero-padded to the largest side:
    float32 [sides, N, S, S] in [0, 1], where index k holds side DIGIT_PX[0] + k."""
    t = torch.from_numpy(glyphs)[:, None]
    top = DIGIT_PX[1]
    out = np.zeros((top - DIGIT_PX[0] + 1, len(glyphs), top, top), np.float32)
    for k, side in enumerate(range(DIGIT_PX[0], top + 1)):
        up = torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
        out[k, :, :side, :side] = up[:, 0].clamp(0, 1).numpy()
    return out


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 [N, 3] ink colours: random hues, every channel in INK, so ink is always
    brighter than the (BACKGROUND-range) canvas: the contrast has one polarity, the colour
    carries no label information."""
    return rng.uniform(*INK, (n, 3)).astype(np.float32)


def _paint(canvas: np.ndarray, glyphs: np.ndarray, gy, gx, h, w, y, x, colour) -> np.ndarray:
    """Blend window [gy:gy+h, gx:gx+w] of glyphs [N, S, S] (coverage in [0, 1]) in `colour`
    [N, 3] into canvas [N, 32+S, 32+S, 3] (right/bottom margin of S, so every S x S window
    fits) at (y, x), all images at once. Returns the painted coverage [N, S, S]."""
    n, side = len(canvas), glyphs.shape[1]
    r = np.arange(side)
    inside = (r[None, :] < h[:, None])[:, :, None] & (r[None, :] < w[:, None])[:, None, :]
    gyy = np.minimum(gy[:, None] + r, side - 1)[:, :, None]
    gxx = np.minimum(gx[:, None] + r, side - 1)[:, None, :]
    batch = np.arange(n)[:, None, None]
    alpha = (glyphs[batch, gyy, gxx] * inside)[..., None]                 # [N, S, S, 1]
    rows, cols = (y[:, None] + r)[:, :, None], (x[:, None] + r)[:, None, :]
    window = canvas[batch, rows, cols]                                    # [N, S, S, 3]
    canvas[batch, rows, cols] = window * (1 - alpha) + colour[:, None, None, :] * alpha
    return alpha[..., 0]


@functools.lru_cache(maxsize=2)   # train and test: a second load in one process is free
def _render(split: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 [count, 3, 32, 32] images, int64 labels, float32 [count, 4] boxes, and
    bool [count, 32, 32] masks of where the digit's ink is (for checking the boxes)."""
    glyphs, labels = _source_digits()
    sources = _split_sources(labels)[split]
    scaled = _scaled(glyphs)
    # sources sorted by class: class c's are by_class[start[c]: start[c] + count[c]]
    by_class = sources[np.argsort(labels[sources], kind="stable")]
    count_c = np.bincount(labels[sources], minlength=10)
    start_c = np.concatenate([[0], np.cumsum(count_c)[:-1]])
    rng = np.random.default_rng([GENERATOR_SEED, 0 if split == "train" else 1])
    n, sides = count, DIGIT_PX[1] - DIGIT_PX[0] + 1

    # All random draws first (their order fixes the data set), then painting in chunks that
    # stay in cache (several times faster than painting all images at once).
    background = rng.uniform(*BACKGROUND, (n, 3)).astype(np.float32)
    target = rng.choice(sources, n)
    label = labels[target]
    zero = np.zeros(n, np.int64)
    layers = []     # (size index, glyph index, gy, gx, h, w, y, x, colour), painted in order
    # Clutter first, so the whole digit is always on top: pieces of other classes' digits.
    pieces = rng.integers(FRAGMENTS[0], FRAGMENTS[1] + 1, n)
    for k in range(FRAGMENTS[1]):
        other = rng.integers(0, 9, n)
        other = other + (other >= label)                               # any class but the target's
        glyph = by_class[start_c[other] + (rng.uniform(0, 1, n) * count_c[other]).astype(np.int64)]
        size = rng.integers(0, sides, n)
        side = size + DIGIT_PX[0]
        h = rng.integers(side // 3, side * 2 // 3 + 1)                 # a third to two thirds
        w = rng.integers(side // 3, side * 2 // 3 + 1)
        gy, gx = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
        y, x = rng.integers(0, CANVAS - h + 1), rng.integers(0, CANVAS - w + 1)
        colour = _colours(rng, n)
        h = np.where(k < pieces, h, 0)                                 # this image has fewer pieces
        layers.append((size, glyph, gy, gx, h, w, y, x, colour))
    size = rng.integers(0, sides, n)
    side = size + DIGIT_PX[0]
    y, x = rng.integers(0, CANVAS - side + 1), rng.integers(0, CANVAS - side + 1)
    layers.append((size, target, zero, zero, side, side, y, x, _colours(rng, n)))

    margin = CANVAS + DIGIT_PX[1]
    canvas = np.empty((n, CANVAS, CANVAS, 3), np.float32)
    masks = np.zeros((n, CANVAS, CANVAS), bool)
    r = np.arange(DIGIT_PX[1])
    for lo in range(0, n, 500):
        part = slice(lo, min(n, lo + 500))
        m = part.stop - lo
        chunk = np.empty((m, margin, margin, 3), np.float32)
        chunk[:] = background[part, None, None, :]
        for size_i, glyph_i, *geometry in layers:
            alpha = _paint(chunk, scaled[size_i[part], glyph_i[part]], *(g[part] for g in geometry))
        ink = np.zeros((m, margin, margin), bool)                      # the target: last layer
        ink[np.arange(m)[:, None, None], (y[part, None] + r)[:, :, None],
            (x[part, None] + r)[:, None, :]] = alpha > 0.05
        masks[part] = ink[:, :CANVAS, :CANVAS]
        canvas[part] = chunk[:, :CANVAS, :CANVAS]
    rows, cols = masks.any(2), masks.any(1)                            # [N, 32] each
    boxes = np.stack([cols.argmax(1), rows.argmax(1),
                      CANVAS - cols[:, ::-1].argmax(1), CANVAS - rows[:, ::-1].argmax(1)], 1)
    images = np.empty((n, 3, CANVAS, CANVAS), np.uint8)
    for lo in range(0, n, 500):                                        # in place, in chunks
        part = canvas[lo:lo + 500]
        part += 0.04 * rng.standard_normal(part.shape, dtype=np.float32)  # sensor-like noise
        part *= 255
        part += 0.5
        np.clip(part, 0, 255, out=part)
        images[lo:lo + 500] = part.transpose(0, 3, 1, 2)
    return images, label.astype(np.int64), boxes.astype(np.float32), masks


@register_source("digits", splits=tuple(SIZES))
def load_digits_split(cfg: DataConfig, split: str) -> ArrayDataset:
    """The `train` (6000) or `test` (1500) split of digits-in-clutter."""
    if split not in SIZES:
        raise AttncnnError(f"digits has splits train and test, not {split!r}")
    images, labels, boxes, _ = _render(split, SIZES[split])   # copies: the cache stays pristine
    return ArrayDataset(torch.tensor(images), torch.tensor(labels), list(CLASSES), torch.tensor(boxes), name=getattr(cfg, "display_name", None) or NAME,
                        mean=_MEAN, std=_STD, info={"source": "sklearn.datasets.load_digits"})


# Per-channel statistics of the train split, measured (mean 0.249-0.251, std 0.189-0.190):
# colours are uniform random, so the channels agree up to sampling noise.
_MEAN = (0.25, 0.25, 0.25)
_STD = (0.19, 0.19, 0.19)

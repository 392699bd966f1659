"""digits-in-clutter: fixed, split by source digit, boxes around the digit's ink."""
import numpy as np
import pytest
import torch

from attncnn.data import DataConfig, build_loaders
from attncnn.data import digits
from attncnn.data.sources import load_split
from attncnn.errors import AttncnnError


@pytest.fixture(scope="module")
def train():
    return load_split(DataConfig(name="digits"), "train")


def test_splits_have_the_documented_shape(train):
    test = load_split(DataConfig(), "test")
    assert train.images.shape == (digits.SIZES["train"], 3, 32, 32)
    assert test.images.shape == (digits.SIZES["test"], 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.classes == [str(d) for d in range(10)]
    assert train.name == "digits-in-clutter (embedded, 32x32)"
    counts = torch.bincount(train.labels, minlength=10)
    assert counts.min() > 0.7 * counts.float().mean()  # every class well represented


def test_generation_is_deterministic_and_independent_of_the_run_seed(train):
    again = load_split(DataConfig(seed=7), "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert torch.equal(train.boxes, again.boxes)


def test_train_and_test_use_disjoint_source_digits():
    _, labels = digits._source_digits()
    parts = digits._split_sources(labels)
    assert not set(parts["train"]) & set(parts["test"])
    assert len(parts["train"]) + len(parts["test"]) == len(labels)
    for c in range(10):  # each class is in both
        assert (labels[parts["test"]] == c).any() and (labels[parts["train"]] == c).any()


def test_boxes_are_tight_around_the_digit_ink():
    images, labels, boxes, masks = digits._render("test", 300)  # a fresh, smaller draw
    for box, mask in zip(boxes, masks):
        ys, xs = np.nonzero(mask)
        assert len(ys) > 10
        x0, y0, x1, y1 = box
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert side.max() <= digits.DIGIT_PX[1] and side.mean() > 8


def test_the_digit_is_visible_inside_its_box_and_clutter_outside(train):
    x = train.images[:500].float()
    inside = torch.zeros(500, 32, 32, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(train.boxes[:500].long().tolist()):
        inside[i, y0:y1, x0:x1] = True
    # contrast against the image's own background (its median colour)
    background = x.flatten(2).median(2).values[:, :, None, None]
    ink = (x - background).abs().amax(1) > 60
    assert ink[inside].float().mean() > 0.2           # the digit
    assert ink[~inside].float().mean() > 0.02          # clutter too, not just noise


def test_unknown_split_is_a_clear_error():
    with pytest.raises(AttncnnError, match="digits has splits"):
        load_split(DataConfig(), "validation")


def test_build_loaders_on_digits_gives_normalised_batches():
    loaders = build_loaders(DataConfig(batch_size=64, flip=False))
    x, y = next(loaders.train.epoch(0))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
    assert loaders.input_size == (3, 32, 32) and loaders.num_classes == 10
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.5

"""The streaming ImageNet source on a tiny layout: folders, flat val + label file, determinism."""
import numpy as np
import pytest
import torch
from PIL import Image

from attncnn.data import DataConfig, build_loaders
from attncnn.data.imagenet import random_resized_crop, resize_centre_crop
from attncnn.data.loader import train_seed
from attncnn.errors import AttncnnError

CLASSES = ["n001", "n002", "n003"]


def jpeg(path, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 128)).save(path, quality=95)


def make_layout(root, flat_val="txt", per_class=4):
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            jpeg(root / "train" / name / f"{name}_{i}.JPEG", (40 + 6 * i, 30 + 4 * c), 60 * c + i)
    rows = []
    for k in range(6):
        c = k % 3
        if flat_val:
            jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", (36, 44), 60 * c)
            rows.append((f"ILSVRC2012_val_{k:08d}", CLASSES[c]))
        else:
            jpeg(root / "val" / CLASSES[c] / f"v{k}.JPEG", (36, 44), 60 * c)
    if flat_val == "txt":
        lines = [f"{n}.JPEG {c if k % 2 else CLASSES.index(c)}" for k, (n, c) in enumerate(rows)]
        (root / "val_labels.txt").write_text("# file class\n" + "\n".join(lines) + "\n")
    elif flat_val == "csv":
        lines = [f"{n},{c} 1 2 30 40" for n, c in rows]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(lines) + "\n")
    return root


def cfg_for(root, **kw):
    base = dict(name="imagenet", root=str(root), eval_split="val", image_size=16, batch_size=4,
                eval_batch_size=4, workers=0)
    return DataConfig(**{**base, **kw})


def expected_val_labels():
    return [k % 3 for k in range(6)]


@pytest.mark.parametrize("flat_val", ["txt", "csv", None])
def test_val_layouts_give_the_right_labels(tmp_path, flat_val):
    loaders = build_loaders(cfg_for(make_layout(tmp_path / "in", flat_val)))
    assert loaders.classes == CLASSES and loaders.input_size == (3, 16, 16)
    xs, ys = zip(*loaders.eval.epoch(0))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
    assert sorted(y.tolist()) == sorted(expected_val_labels())
    # the pixel colour identifies the class: red channel 60 * c
    red = x[:, 0, 8, 8] * loaders.std[0] + loaders.mean[0]
    assert torch.allclose(red * 255, y.float() * 60, atol=4)


def test_training_batches_are_deterministic_and_resumable(tmp_path):
    cfg = cfg_for(make_layout(tmp_path / "in"), seed=3)
    a = list(build_loaders(cfg).train.epoch(1))
    b = list(build_loaders(cfg).train.epoch(1))
    assert len(a) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    resumed = list(build_loaders(cfg).train.epoch(1, start_step=2))
    assert len(resumed) == 1 and torch.equal(resumed[0][0], a[2][0])
    other = list(build_loaders(cfg).train.epoch(2))
    assert not all(torch.equal(xa, xo) for (xa, _), (xo, _) in zip(a, other))
    run1 = build_loaders(cfg, run_seed=1).train  # the run seed, given when it is built
    assert run1.seed == train_seed(3, 1) and build_loaders(cfg).train.seed == 3
    assert not all(torch.equal(xa, xr) for (xa, _), (xr, _) in zip(a, run1.epoch(1)))


def test_crops_follow_the_run_seed_as_well_as_the_order(tmp_path):
    """Twelve copies of one image: the batches then differ only where the crops and flips do."""
    gradient = np.add.outer(np.arange(48), np.arange(64)).astype(np.uint8)
    image = Image.fromarray(np.stack([gradient, 255 - gradient, gradient[::-1]], 2))
    for c, name in enumerate(CLASSES):
        for i in range(4):
            (tmp_path / "train" / name).mkdir(parents=True, exist_ok=True)
            image.save(tmp_path / "train" / name / f"{i}.png")
    (tmp_path / "val" / "n001").mkdir(parents=True)
    image.save(tmp_path / "val" / "n001" / "v.png")
    cfg = cfg_for(tmp_path, batch_size=12)

    def pixels(run_seed):
        return next(build_loaders(cfg, run_seed=run_seed).train.epoch(0))[0]

    assert torch.equal(pixels(0), pixels(0)) and not torch.equal(pixels(0), pixels(1))


def test_workers_and_ranks_do_not_change_the_global_batch(tmp_path):
    root = make_layout(tmp_path / "in")
    one = list(build_loaders(cfg_for(root)).train.epoch(0))
    two_workers = list(build_loaders(cfg_for(root, workers=2)).train.epoch(0))
    r0 = list(build_loaders(cfg_for(root), rank=0, world_size=2).train.epoch(0))
    r1 = list(build_loaders(cfg_for(root), rank=1, world_size=2).train.epoch(0))
    for (x, y), (xw, yw), (x0, y0), (x1, y1) in zip(one, two_workers, r0, r1):
        assert torch.equal(x, xw) and torch.equal(y, yw)
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_crops():
    gen = torch.Generator().manual_seed(0)
    img = Image.fromarray(np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3))
    for _ in range(20):
        assert random_resized_crop(img, 24, gen).size == (24, 24)
    tall = Image.new("RGB", (10, 300))
    assert random_resized_crop(tall, 8, gen).size == (8, 8)
    centre = resize_centre_crop(Image.new("RGB", (300, 200)), 224)
    assert centre.size == (224, 224)


def test_bad_layouts_and_corrupt_files(tmp_path):
    root = make_layout(tmp_path / "in")
    (root / "val_labels.txt").unlink()
    with pytest.raises(AttncnnError, match="label file"):
        build_loaders(cfg_for(root))
    root = make_layout(tmp_path / "in2")
    (root / "train" / "n002" / "n002_1.JPEG").write_bytes(b"not a jpeg")
    loaders = build_loaders(cfg_for(root, augment=False))
    with pytest.raises(AttncnnError) as err:
        list(loaders.train.epoch(0))
    assert "n002_1.JPEG" in str(err.value) and "\n" not in str(err.value)
    loaders = build_loaders(cfg_for(root, skip_corrupt=True))
    seen = sum(len(y) for _, y in loaders.train.epoch(0))
    assert seen == 11 and loaders.train.data.info["skipped_corrupt"] == 1
    assert (loaders.train.num_samples, loaders.train.num_samples_per_rank) == (12, 12)
    two = build_loaders(cfg_for(root, batch_size=8), rank=1, world_size=2)
    assert (two.train.num_samples, two.train.num_samples_per_rank) == (12, 4)  # 8 // 2, once
    assert (two.eval.num_samples, two.eval.num_samples_per_rank) == (6, 3)
    with pytest.raises(AttncnnError, match="not found"):
        build_loaders(cfg_for(tmp_path / "nowhere"))


def test_files_are_read_as_predict_reads_them(tmp_path):
    """An EXIF-rotated JPEG, transparency and 16-bit greyscale reach training and evaluation
    as `predict` feeds imagenet weights the same files (data.image_input), not as a plain
    convert("RGB") decodes them (stored sideways, transparent pixels black, grey clipped)."""
    from attncnn.data.image_input import ImageInput

    root = tmp_path / "in"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
    y, x = np.mgrid[0:24, 0:40]
    ramp = np.stack([x * 6, y * 10, (x * y) % 256], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6                                   # "turn 90 clockwise to view"
    Image.fromarray(ramp).transpose(Image.ROTATE_90).save(
        root / "val" / "a" / "1_sideways.jpg", exif=exif.tobytes(), quality=95)
    rgba = np.dstack([ramp, np.tile(np.arange(40) * 6, (24, 1))]).astype(np.uint8)
    Image.fromarray(rgba).save(root / "val" / "a" / "2_alpha.png")
    Image.fromarray((x * 1600 + y * 40).astype(np.uint16)).save(root / "val" / "a" / "3_grey16.png")
    for f in (root / "val" / "a").iterdir():
        (root / "train" / "a" / f.name).write_bytes(f.read_bytes())
    files = sorted((root / "val" / "a").iterdir())

    loaders = build_loaders(cfg_for(root, batch_size=3, eval_batch_size=3))
    spec = ImageInput.for_weights({"input_size": [3, 16, 16], "mean": loaders.mean,
                                   "std": loaders.std, "summary": {"data_source": "imagenet"}})
    (x_eval, _), = loaders.eval.epoch(0)
    assert torch.allclose(x_eval, torch.stack([spec.prepare(f) for f in files]), atol=1e-5)
    # training decodes through the same reader (augment off: the same centre crop)
    train_files = build_loaders(cfg_for(root, batch_size=3, augment=False)).train.files
    for i, (path, _) in enumerate(train_files.samples):
        pixels, _, _, ok = train_files[(i, 0)]
        assert ok and torch.equal(pixels, spec.read(path))

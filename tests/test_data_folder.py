"""The folder source: folders and tarballs of class folders, RGB conversion, the cache, bad input."""
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attncnn.data import DataConfig, build_loaders
from attncnn.data import folder as folder_mod
from attncnn.data.sources import load_split
from attncnn.errors import AttncnnError

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def make_tree(root: Path, per_class: int = 3, size: int = 8, splits=("train", "test")) -> Path:
    """root/<split>/<class>/<i>.png, each image one flat colour per class plus its index."""
    for split in splits:
        for cls, colour in COLOURS.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((size, size, 3), colour, np.uint8)
                pixels[0, 0] = i
                Image.fromarray(pixels).save(d / f"{i:04d}.png")
    (root / splits[0] / "README.txt").write_text("not an image")
    return root


def make_tarball(tree: Path, path: Path, top: str | None = "mydata") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=top or ".")
    return path


def cfg_for(root, tmp_path, **kw):
    return DataConfig(name="folder", root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_folder_gives_sorted_classes_and_the_right_labels(tmp_path):
    tree = make_tree(tmp_path / "pets")
    data = load_split(cfg_for(tree, tmp_path), "train")
    assert data.classes == ["cat", "dog", "emu"]
    assert data.images.shape == (9, 3, 8, 8) and data.images.dtype == torch.uint8
    for image, label in zip(data.images, data.labels):
        assert tuple(image[:, 4, 4].tolist()) == COLOURS[data.classes[label]]
    assert data.name == "pets" and data.info["skipped_corrupt"] == 0
    assert load_split(cfg_for(tree, tmp_path, display_name="Pets v1"), "test").name == "Pets v1"


def test_tarball_with_a_top_level_folder_equals_the_folder(tmp_path):
    tree = make_tree(tmp_path / "pets")
    for top in ("mydata", None):
        tarball = make_tarball(tree, tmp_path / f"pets-{top}.tar.gz", top)
        a = load_split(cfg_for(tree, tmp_path), "test")
        b = load_split(cfg_for(tarball, tmp_path), "test")
        assert a.classes == b.classes
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert b.name == "pets-None"


def test_greyscale_palette_and_rgba_become_rgb(tmp_path):
    """As predict and explain read files (attncnn.data.image_input): a half-transparent
    pixel is shown on white, c * 128/255 + 255 * 127/255."""
    d = tmp_path / "modes" / "train" / "only"
    d.mkdir(parents=True)
    Image.new("L", (4, 4), 100).save(d / "grey.png")
    Image.new("RGB", (4, 4), (10, 20, 30)).convert("P", palette=Image.ADAPTIVE).save(d / "palette.gif")
    Image.new("RGBA", (4, 4), (40, 50, 60, 128)).save(d / "rgba.png")
    Image.new("RGB", (4, 4), (70, 80, 90)).save(d / "plain.bmp")
    data = load_split(cfg_for(tmp_path / "modes", tmp_path), "train")
    pixels = {tuple(img[:, 0, 0].tolist()) for img in data.images}
    assert pixels == {(100, 100, 100), (10, 20, 30), (147, 152, 157), (70, 80, 90)}


def test_mixed_sizes_need_image_size(tmp_path):
    tree = make_tree(tmp_path / "t")
    Image.new("RGB", (12, 10)).save(tree / "train" / "dog" / "big.png")
    with pytest.raises(AttncnnError) as err:
        load_split(cfg_for(tree, tmp_path), "train")
    assert "big.png" in one_line(err) and "image_size" in str(err.value)
    data = load_split(cfg_for(tree, tmp_path, image_size=6), "train")
    assert data.images.shape == (10, 3, 6, 6)


def test_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "t")
    tarball = make_tarball(tree, tmp_path / "t.tar")
    for root in (tree, tarball):
        first = load_split(cfg_for(root, tmp_path), "train")

        def no_decoding(*a, **k):
            raise AssertionError("decoded again despite the cache")

        with monkeypatch.context() as m:
            m.setattr(folder_mod, "decode_many", no_decoding)
            again = load_split(cfg_for(root, tmp_path), "train")
            assert torch.equal(first.images, again.images)
            # a changed file is a new key: decoding is attempted again
            Image.new("RGB", (8, 8), (1, 2, 3)).save(tree / "train" / "cat" / "0000.png")
            if root == tarball:
                make_tarball(tree, tarball)
            with pytest.raises(AssertionError, match="decoded again"):
                load_split(cfg_for(root, tmp_path), "train")
        changed = load_split(cfg_for(root, tmp_path), "train")
        assert tuple(changed.images[0, :, 0, 0].tolist()) == (1, 2, 3)


def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path):
    cases = {}
    tree = make_tree(tmp_path / "corrupt")
    (tree / "train" / "dog" / "bad.png").write_bytes(b"\x89PNG not really")
    cases["corrupt"] = (tree, "bad.png")
    tree = make_tree(tmp_path / "truncated")
    whole = (tree / "train" / "cat" / "0001.png").read_bytes()
    (tree / "train" / "cat" / "0001.png").write_bytes(whole[: len(whole) // 2])
    cases["truncated"] = (tree, "0001.png")
    tree = make_tree(tmp_path / "emptyclass")
    (tree / "train" / "fox").mkdir()
    cases["empty class"] = (tree, "fox")
    (tmp_path / "noimages" / "train").mkdir(parents=True)
    cases["no class folders"] = (tmp_path / "noimages", "noimages")
    cases["missing"] = (tmp_path / "absent", "absent")
    (tmp_path / "fake.tar.gz").write_text("hello")
    cases["not a tarball"] = (tmp_path / "fake.tar.gz", "fake.tar.gz")
    whole = make_tarball(make_tree(tmp_path / "cut"), tmp_path / "cut.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    cases["truncated tarball"] = (tmp_path / "cut.tar.gz", "cut.tar.gz")
    tree = make_tree(tmp_path / "nosplit", splits=("training",))
    cases["no such split"] = (tree, "nosplit")
    for case, (root, named) in cases.items():
        with pytest.raises(AttncnnError) as err:
            load_split(cfg_for(root, tmp_path), "train")
        assert named in one_line(err), case


def test_corrupt_member_of_a_tarball_is_named(tmp_path):
    tree = make_tree(tmp_path / "t")
    (tree / "train" / "emu" / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    tarball = make_tarball(tree, tmp_path / "t.tar.gz")
    with pytest.raises(AttncnnError) as err:
        load_split(cfg_for(tarball, tmp_path), "train")
    assert "t.tar.gz:mydata/train/emu/x.jpg" in one_line(err)


def test_skip_corrupt_counts_and_warns(tmp_path, capsys):
    tree = make_tree(tmp_path / "t")
    (tree / "train" / "dog" / "bad1.png").write_bytes(b"junk")
    (tree / "train" / "emu" / "bad2.jpg").write_bytes(b"junk")
    data = load_split(cfg_for(tree, tmp_path, skip_corrupt=True), "train")
    assert data.info["skipped_corrupt"] == 2 and len(data) == 9
    for image, label in zip(data.images, data.labels):  # no label shifted by the skips
        assert tuple(image[:, 4, 4].tolist()) == COLOURS[data.classes[label]]
    assert "skipped 2 corrupt" in capsys.readouterr().err
    again = load_split(cfg_for(tree, tmp_path, skip_corrupt=True), "train")  # from the cache
    assert again.info["skipped_corrupt"] == 2


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "t", per_class=4)
    serial = load_split(cfg_for(tree, tmp_path / "a", workers=1), "train")
    monkeypatch.setattr("attncnn.data.decode.PARALLEL_MIN", 1)
    monkeypatch.setattr("attncnn.data.decode.CHUNK", 5)
    parallel = load_split(cfg_for(tree, tmp_path / "b", workers=2), "train")
    assert torch.equal(serial.images, parallel.images) and torch.equal(serial.labels, parallel.labels)


def test_build_loaders_on_a_folder(tmp_path):
    tree = make_tree(tmp_path / "t", per_class=4)
    loaders = build_loaders(cfg_for(tree, tmp_path, batch_size=4, eval_batch_size=5))
    assert loaders.classes == ["cat", "dog", "emu"] and loaders.input_size == (3, 8, 8)
    assert len(loaders.train) == 3 and len(loaders.eval) == 3
    assert sum(len(y) for _, y in loaders.eval.epoch(0)) == 12


@pytest.mark.slow
@pytest.mark.realdata
def test_train_subset_is_stratified_seeded_and_leaves_eval_alone(tmp_path):
    tree = make_tree(tmp_path / "pets", per_class=10)  # 30 train, 30 test images

    def loaders(**kw):
        return build_loaders(cfg_for(tree, tmp_path, workers=1, **kw))

    def ids(data):  # (class, index in class): pixel (0, 0) holds the index
        return sorted(zip(data.labels.tolist(), data.images[:, 0, 0, 0].tolist()))

    six = loaders(train_subset=6)
    assert len(six.train.data) == 6 and torch.bincount(six.train.data.labels).tolist() == [2, 2, 2]
    assert len(six.eval.data) == 30 and six.classes == ["cat", "dog", "emu"]
    assert torch.bincount(loaders(train_subset=7).train.data.labels).tolist() == [3, 2, 2]
    assert torch.bincount(loaders(train_subset=0.5).train.data.labels).tolist() == [5, 5, 5]
    assert len(loaders(train_subset=1.0).train.data) == 30
    assert ids(loaders(train_subset=6).train.data) == ids(six.train.data)      # seeded
    assert ids(loaders(train_subset=6, seed=1).train.data) != ids(six.train.data)
    # with a val hold-out: val keeps its share of all of train, the subset comes from the rest
    held = loaders(train_subset=3, val_fraction=0.2, eval_split="val")
    assert len(held.train.data) == 3 and len(held.eval.data) == 6
    assert not set(ids(held.train.data)) & set(ids(held.eval.data))
    assert ids(held.eval.data) == ids(loaders(val_fraction=0.2, eval_split="val").eval.data)
    with pytest.raises(AttncnnError, match="train_subset=31 is more than the 30 training images"):
        loaders(train_subset=31)


def test_shared_cifar10_jpeg_copy(shared_data, tmp_path_factory):
    tarball = shared_data / "cifar10-jpeg.tar.gz"
    cfg = DataConfig(name="folder", root=str(tarball), cache_dir=str(tmp_path_factory.mktemp("c")),
                     display_name="CIFAR-10 (JPEG q75 copy)")
    cifar_order = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
    for split, n in (("train", 50_000), ("test", 5_000)):
        data = load_split(cfg, split)
        assert data.images.shape == (n, 3, 32, 32)
        assert data.classes == cifar_order
        assert torch.bincount(data.labels).tolist() == [n // 10] * 10
        assert data.name == "CIFAR-10 (JPEG q75 copy)"
        assert 100 < data.images.float().mean() < 140  # real photographs, not blank

"""The official python-format CIFAR readers, on tiny archives written here."""
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from attncnn.data import DataConfig, build_loaders
from attncnn.data import cifar
from attncnn.data.sources import load_split
from attncnn.errors import AttncnnError

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                 b"dog", b"frog", b"horse", b"ship", b"truck"]


def batch_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_tar(path, top, files: dict):
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in files.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def make_cifar10(tmp_path, per_batch=4):
    files = {"batches.meta": {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": per_batch}}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        files[name] = {b"data": batch_images(per_batch, i),
                       b"labels": [(i + j) % 10 for j in range(per_batch)],
                       b"batch_label": name.encode()}
    return write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files), files


def make_cifar100(tmp_path, n=6):
    files = {"meta": {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                      b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}}
    for i, split in enumerate(["train", "test"]):
        fine = np.arange(n) * 7 % 100
        files[split] = {b"data": batch_images(n, 10 + i), b"fine_labels": fine.tolist(),
                        b"coarse_labels": (fine // 5).tolist()}
    return write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files), files


def test_cifar10_archive_reads_images_labels_and_class_names(tmp_path):
    archive, files = make_cifar10(tmp_path)
    train = load_split(DataConfig(name="cifar10", root=str(archive)), "train")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == [c.decode() for c in CIFAR10_NAMES]
    expected = np.concatenate([files[f"data_batch_{k}"][b"data"] for k in range(1, 6)])
    assert np.array_equal(train.images.reshape(20, -1).numpy(), expected)  # R, G, B planes
    assert train.labels.tolist() == sum((files[f"data_batch_{k}"][b"labels"] for k in range(1, 6)), [])
    assert train.name == "CIFAR-10" and train.mean == cifar.CIFAR10.mean
    test = load_split(DataConfig(name="cifar10", root=str(archive)), "test")
    assert test.labels.tolist() == files["test_batch"][b"labels"]


def test_cifar10_extracted_folder_and_default_cache_dir(tmp_path):
    archive, _ = make_cifar10(tmp_path)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    from_tar = load_split(DataConfig(name="cifar10", root=str(archive)), "test")
    for root in (tmp_path / "x", tmp_path / "x" / "cifar-10-batches-py"):
        from_dir = load_split(DataConfig(name="cifar10", root=str(root)), "test")
        assert torch.equal(from_tar.images, from_dir.images)
    # no root: the archive in the cache folder is found
    from_cache = load_split(DataConfig(name="cifar10", cache_dir=str(tmp_path)), "test")
    assert torch.equal(from_tar.images, from_cache.images)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    archive, files = make_cifar100(tmp_path)
    fine = load_split(DataConfig(name="cifar100", root=str(archive)), "train")
    coarse = load_split(DataConfig(name="cifar100", root=str(archive), label_mode="coarse"), "train")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.labels.tolist() == files["train"][b"fine_labels"]
    assert coarse.labels.tolist() == files["train"][b"coarse_labels"]
    assert coarse.classes[0] == "c0" and "coarse" in coarse.name
    assert torch.equal(fine.images, coarse.images)
    with pytest.raises(AttncnnError, match="label_mode"):
        load_split(DataConfig(name="cifar100", root=str(archive), label_mode="medium"), "train")


def test_build_loaders_with_validation_split(tmp_path):
    archive, _ = make_cifar10(tmp_path, per_batch=10)
    cfg = DataConfig(name="cifar10", root=str(archive), eval_split="val", val_fraction=0.2,
                     batch_size=16)
    loaders = build_loaders(cfg)
    assert loaders.train.num_samples + loaders.eval.num_samples == 50
    assert loaders.train.num_samples_per_rank == 32  # two whole batches of the 40
    assert loaders.eval.num_samples == 10 and loaders.name == "CIFAR-10"


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                        {"batches.meta": {b"label_names": CIFAR10_NAMES},
                         "test_batch": {b"data": Boom(), b"labels": [0]}})
    with pytest.raises(AttncnnError, match="test_batch.*posix.system|test_batch.*os.system|not allowed"):
        load_split(DataConfig(name="cifar10", root=str(archive)), "test")


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(AttncnnError) as err:
        load_split(DataConfig(name="cifar10", cache_dir=str(tmp_path / "empty")), "train")
    msg = str(err.value)
    assert "\n" not in msg and "cifar-10-python.tar.gz" in msg and str(tmp_path / "empty") in msg
    assert "download" in msg


def test_download_is_md5_checked(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    archive, _ = make_cifar10(tmp_path / "src")
    good = cifar.Release(**{**cifar.CIFAR10.__dict__, "url": archive.as_uri(),
                            "md5": hashlib.md5(archive.read_bytes()).hexdigest()})
    monkeypatch.setattr(cifar, "CIFAR10", good)
    cfg = DataConfig(name="cifar10", cache_dir=str(tmp_path / "cache"), download=True)
    data = load_split(cfg, "test")
    assert len(data) == 4 and (tmp_path / "cache" / "cifar-10-python.tar.gz").is_file()
    bad = cifar.Release(**{**good.__dict__, "md5": "0" * 32})
    monkeypatch.setattr(cifar, "CIFAR10", bad)
    with pytest.raises(AttncnnError, match="md5"):
        load_split(DataConfig(name="cifar10", cache_dir=str(tmp_path / "c2"), download=True), "test")
    assert not list((tmp_path / "c2").glob("*"))  # nothing half-downloaded left behind


def test_bad_archives_are_named(tmp_path):
    (tmp_path / "fake.tar.gz").write_bytes(b"nope")
    with pytest.raises(AttncnnError, match="fake.tar.gz"):
        load_split(DataConfig(name="cifar10", root=str(tmp_path / "fake.tar.gz")), "test")
    archive = write_tar(tmp_path / "partial.tar.gz", "cifar-10-batches-py",
                        {"batches.meta": {b"label_names": CIFAR10_NAMES}})
    with pytest.raises(AttncnnError, match="partial.tar.gz.*test_batch"):
        load_split(DataConfig(name="cifar10", root=str(archive)), "test")

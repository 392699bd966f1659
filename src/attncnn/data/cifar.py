"""CIFAR-10 and CIFAR-100 in the official python format (Krizhevsky, 2009).

`data.root` is the official `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`, or the
folder it extracts to (`cifar-10-batches-py`, `cifar-100-python`), or a folder holding either;
by default the cache folder (`data.cache_dir`, else ~/.cache/attncnn) is searched. With
`data.download: true` a missing archive is fetched from the official URL and checked against
its published md5 before use.

The batches are Python pickles. They are read with a restricted unpickler that can build
only dicts, lists, strings and numpy arrays (no other global is resolved), so a tampered
file cannot run code. CIFAR-100 has 100 fine and 20 coarse labels: `data.label_mode`.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attncnn.data.cache import cache_dir
from attncnn.data.config import LABEL_MODES, DataConfig
from attncnn.data.dataset import ArrayDataset
from attncnn.data.sources import register_source
from attncnn.errors import AttncnnError


@dataclass(frozen=True)
class Release:
    name: str            # display name
    archive: str         # official file name
    folder: str          # what the archive extracts to
    url: str
    md5: str
    splits: dict         # split -> batch file names
    meta: str
    mean: tuple
    std: tuple


CIFAR10 = Release(
    "CIFAR-10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, "batches.meta",
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100 = Release(
    "CIFAR-100", "cifar-100-python.tar.gz", "cifar-100-python",
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    {"train": ["train"], "test": ["test"]}, "meta",
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled numpy array needs; anything else is refused."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),     # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core"):  # numpy >= 2 moved these to numpy._core
            try:
                module = module.replace("numpy.core", "numpy._core", 1)
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                module = module.replace("numpy._core", "numpy.core", 1)
        return super().find_class(module, name)


def safe_unpickle(data: bytes, where: str) -> dict:
    """A CIFAR batch (a dict with bytes keys) from pickle bytes, or an AttncnnError."""
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a CIFAR batch
        raise AttncnnError(f"{where}: not a CIFAR python-format batch ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(obj, dict):
        raise AttncnnError(f"{where}: not a CIFAR python-format batch (a {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _download(release: Release, target: Path) -> None:
    """Fetch the archive to `target`, verifying the md5 before it is moved into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    md5 = hashlib.md5()
    try:
        with urllib.request.urlopen(release.url, timeout=60) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 20):
                md5.update(chunk)
                f.write(chunk)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise AttncnnError(f"could not download {release.url} ({err}); put {release.archive} in "
                           f"{target.parent} or set data.root to it") from None
    if md5.hexdigest() != release.md5:
        part.unlink(missing_ok=True)
        raise AttncnnError(f"{release.url}: downloaded file has md5 {md5.hexdigest()}, expected "
                           f"{release.md5}; not used")
    part.replace(target)


def _locate(release: Release, cfg: DataConfig) -> Path:
    """The archive or extracted folder to read, downloading the archive if allowed."""
    root = Path(cfg.root).expanduser() if cfg.root else cache_dir(cfg.cache_dir)
    for p in (root, root / release.folder, root / release.archive):
        if p.is_file() or (p / release.meta).is_file():
            return p
    archive_named = root.name.endswith((".tar.gz", ".tgz", ".tar"))
    target = root if archive_named else root / release.archive
    if cfg.download:
        _download(release, target)
        return target
    raise AttncnnError(f"{release.name} not found at {root}: put {release.archive} ({release.url}) "
                       f"at {target}, or set data.root to it or to its extracted folder "
                       f"{release.folder}, or set data.download: true")


def _read_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """{name: bytes} of the batch files `names` from an archive or a folder."""
    if path.is_dir():
        out = {}
        for n in names:
            if not (path / n).is_file():
                raise AttncnnError(f"{path / n}: missing CIFAR batch file")
            out[n] = (path / n).read_bytes()
        return out
    out = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names and base not in out:
                    out[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise AttncnnError(f"{path}: not a readable CIFAR archive ({str(err).splitlines()[0]})") from None
    missing = [n for n in names if n not in out]
    if missing:
        raise AttncnnError(f"{path}: archive lacks the CIFAR batch file(s) {', '.join(missing)}")
    return out


def load_cifar(release: Release, cfg: DataConfig, split: str) -> ArrayDataset:
    if split not in release.splits:
        raise AttncnnError(f"{release.name} has splits train and test, not {split!r} "
                           "(use data.val_fraction for a validation split)")
    coarse = release is CIFAR100 and cfg.label_mode == "coarse"
    if cfg.label_mode not in LABEL_MODES:
        raise AttncnnError(f"data.label_mode must be fine or coarse, not {cfg.label_mode!r}")
    path = _locate(release, cfg)
    names = release.splits[split]
    raw = _read_members(path, names + [release.meta])
    meta = safe_unpickle(raw[release.meta], f"{path}:{release.meta}")
    key = "coarse_label_names" if coarse else ("fine_label_names" if release is CIFAR100 else "label_names")
    label_key = "coarse_labels" if coarse else ("fine_labels" if release is CIFAR100 else "labels")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(key, [])]
    images, labels = [], []
    for n in names:
        where = f"{path}:{n}"
        batch = safe_unpickle(raw[n], where)
        data, y = np.asarray(batch.get("data")), np.asarray(batch.get(label_key), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise AttncnnError(f"{where}: expected uint8 data [N, 3072] and N {label_key}, got "
                               f"{data.dtype} {data.shape} and {y.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    y = np.concatenate(labels)
    if not classes or y.min() < 0 or y.max() >= len(classes):
        raise AttncnnError(f"{path}: labels do not match the {len(classes)} class names in {release.meta}")
    name = release.name + (" (coarse, 20 classes)" if coarse else "")
    return ArrayDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(y), classes,
                        name=cfg.display_name or name, mean=release.mean, std=release.std,
                        info={"root": str(path), "split": split})


@register_source("cifar10", splits=tuple(CIFAR10.splits))
def load_cifar10(cfg: DataConfig, split: str) -> ArrayDataset:
    return load_cifar(CIFAR10, cfg, split)


@register_source("cifar100", splits=tuple(CIFAR100.splits))
def load_cifar100(cfg: DataConfig, split: str) -> ArrayDataset:
    return load_cifar(CIFAR100, cfg, split)

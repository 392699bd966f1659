"""Image folders: `root/<split>/<class>/<image>`, root being a folder or a .tar/.tar.gz of one.

The class of an image is the name of the folder under the split it sits in (any depth below
that folder), classes are ordered by sorted folder name, and a split is a sub-folder name
("train", "test", ...). One extra top-level folder is looked through, so a tarball holding
`cifar10-jpeg/train/airplane/0001.jpg` works with root = the tarball and split = "train".
Any file PIL knows by its suffix is an image; other files (README, .DS_Store) are ignored.

Images are decoded once (in parallel) into a uint8 tensor and cached (see `cache.py`); the
next run reads the cache without opening the tarball. Normalisation is the fixed
mean 0.5 / std 0.25 per channel for every folder: the same for every split without decoding
train to evaluate test, and within 0.05 of the measured CIFAR statistics.
"""
from __future__ import annotations

import os
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from attncnn.data import cache
from attncnn.data.config import DataConfig
from attncnn.data.dataset import ArrayDataset
from attncnn.data.decode import decode_many, image_suffixes
from attncnn.data.sources import register_source
from attncnn.errors import AttncnnError, did_you_mean, first_line

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def display_name(root: Path) -> str:
    """"cifar10-jpeg" for .../cifar10-jpeg.tar.gz or .../cifar10-jpeg/."""
    name = root.name
    for suffix in TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _scan_dir(root: Path, split: str) -> tuple[list[str], list[tuple[str, Path, int]]]:
    """Classes and [(display name, path, label)] of `split` in a folder tree."""
    base = root
    if not (root / split).is_dir():
        subdirs = [d for d in root.iterdir() if d.is_dir() and not _hidden(d.name)]
        if len(subdirs) == 1 and (subdirs[0] / split).is_dir():
            base = subdirs[0]
        else:
            found = ", ".join(sorted(d.name for d in subdirs)) or "nothing"
            raise AttncnnError(f"{root}: no split folder {split!r} (found: {found}); expected "
                               f"{root}/{split}/<class>/<image>")
    split_dir = base / split
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not _hidden(d.name))
    if not classes:
        raise AttncnnError(f"{split_dir}: no class folders; expected {split_dir}/<class>/<image>")
    suffixes = image_suffixes()
    items = []
    for label, name in enumerate(classes):
        files = sorted(f for f in (split_dir / name).rglob("*")
                       if f.suffix.lower() in suffixes and f.is_file()
                       and not any(_hidden(p) for p in f.relative_to(split_dir).parts))
        if not files:
            raise AttncnnError(f"{split_dir / name}: class folder has no images")
        items.extend((str(f), f, label) for f in files)
    return classes, items


def _scan_tar(path: Path, split: str) -> tuple[list[str], list[tuple[str, bytes, int]]]:
    """Classes and [(display name, bytes, label)] of `split` in a tarball, in one pass."""
    suffixes = image_suffixes()
    # prefix ("" or one top-level folder) -> class -> [(member name, bytes)]
    found: dict[str, dict[str, list]] = {}
    seen_top: set[str] = set()
    try:
        tar = tarfile.open(path, "r:*")
    except tarfile.ReadError:
        raise AttncnnError(f"{path}: not a tar archive (.tar, .tar.gz, .tar.bz2 or .tar.xz), "
                           "nor a folder") from None
    try:
        with tar:
            for member in tar:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if not parts or any(_hidden(p) for p in parts):
                    continue
                seen_top.add("/".join(parts[:2]) if len(parts) > 2 else parts[0])
                for k in (0, 1):               # split at depth 0, or under one top-level folder
                    if len(parts) > k + 1 and parts[k] == split:
                        if len(parts) == k + 2 and not member.isdir():
                            break                  # a file beside the class folders
                        prefix, cls = "/".join(parts[:k]), parts[k + 1]
                        classes = found.setdefault(prefix, {})
                        files = classes.setdefault(cls, [])  # a class folder, maybe empty
                        if (member.isfile() and len(parts) > k + 2
                                and Path(parts[-1]).suffix.lower() in suffixes):
                            files.append((member.name, tar.extractfile(member).read()))
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise AttncnnError(f"{path}: archive is truncated or corrupt ({first_line(err)})") from None
    if not found:
        tops = ", ".join(sorted(seen_top)[:10]) or "nothing"
        raise AttncnnError(f"{path}: no split folder {split!r} in the archive (found: {tops}); "
                           f"expected [<top>/]{split}/<class>/<image>")
    if len(found) > 1 and "" not in found:
        raise AttncnnError(f"{path}: split {split!r} found under several top-level folders "
                           f"({', '.join(sorted(found))}); use one tree per archive")
    prefix = "" if "" in found else next(iter(found))
    tree = found[prefix]
    classes = sorted(tree)
    items = []
    for label, cls in enumerate(classes):
        if not tree[cls]:
            raise AttncnnError(f"{path}: class folder {'/'.join(filter(None, [prefix, split, cls]))} "
                               "has no images")
        items.extend((f"{path}:{name}", data, label) for name, data in sorted(tree[cls]))
    return classes, items


def _decode_split(root: Path, split: str, cfg: DataConfig) -> dict:
    """Scan and decode `split`; the cache entry: images, labels, classes, skipped names."""
    if root.is_dir():
        classes, items = _scan_dir(root, split)
    else:
        classes, items = _scan_tar(root, split)
    images, kept, corrupt = decode_many([(n, p) for n, p, _ in items], cfg.image_size,
                                        workers=cfg.workers, desc=f"decoding {root.name}/{split}",
                                        fit=cfg.image_fit)
    if corrupt and not cfg.skip_corrupt:
        name, error = corrupt[0]
        more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
        raise AttncnnError(f"{name}: cannot decode image: {error}{more}; fix or remove it, "
                           "or set data.skip_corrupt: true to skip corrupt images")
    if not kept:
        raise AttncnnError(f"{root}: no decodable images in split {split!r}")
    labels = np.array([items[i][2] for i in kept], dtype=np.int64)
    return {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
            "classes": classes, "skipped": [n for n, _ in corrupt]}


def resolve_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise AttncnnError(f"data.root must name an image folder or a .tar/.tar.gz of one "
                           f"(data set {cfg.name!r})")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        where = "" if root.is_absolute() else f" (looked in {os.path.normpath(root.absolute())})"
        raise AttncnnError(f"{root}: data root not found{where}")
    return root


def load_folder(cfg: DataConfig, split: str, root: Path | None = None) -> ArrayDataset:
    """The decoded `split` of the image-folder tree (or tarball) at cfg.root."""
    root = root or resolve_root(cfg)
    if root.is_dir():
        # The identity walks the split's files (stat only), so an edit anywhere invalidates.
        files = [f for f in root.rglob("*") if f.is_file()]
        identity = {"tree": str(root.resolve()), "digest": cache.tree_identity(root, files)}
    else:
        identity = {"file": cache.file_identity(root)}
    identity.update(split=split, image_size=cfg.image_size, skip_corrupt=cfg.skip_corrupt)
    if cfg.image_fit != "resize":       # (older caches, all "resize", keep their identity)
        identity.update(image_fit=cfg.image_fit)
    label = f"folder-{display_name(root)}-{split}"
    entry = cache.cached(cache.cache_dir(cfg.cache_dir), label, identity,
                         lambda: _decode_split(root, split, cfg))
    skipped = list(entry["skipped"])
    if skipped:
        print(f"attncnn: warning: skipped {len(skipped)} corrupt image(s) in {root} split {split!r} "
              f"(first: {skipped[0]})", file=sys.stderr)
    folders = list(entry["classes"])
    return ArrayDataset(entry["images"], entry["labels"], class_names(folders, cfg, root), None,
                        name=cfg.display_name or display_name(root), mean=MEAN, std=STD,
                        info={"skipped_corrupt": len(skipped), "skipped_files": skipped,
                              "root": str(root), "split": split, "class_folders": folders})


def class_names(folders: list[str], cfg: DataConfig, root: Path) -> list[str]:
    """The classes' names: data.class_names of each class folder where given (every key must
    name a folder), else the folder's name."""
    names = cfg.class_names or {}
    unknown = sorted(set(names) - set(folders))
    if unknown:
        raise AttncnnError(f"data.class_names names class folder(s) {', '.join(unknown[:5])} "
                           f"that {root} does not have{did_you_mean(unknown[0], folders)}")
    return [names.get(f, f) for f in folders]


register_source("folder")(load_folder)

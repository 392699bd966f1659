"""An on-disk cache of decoded splits, so a data set is decoded once per machine.

An entry is a dict of tensors and plain values saved with `torch.save` and read back with
`weights_only=True` (no code runs on load). Its file name carries a hash of everything the
content depends on: the source's identity (path + size + mtime of a tarball, or the sorted
(relpath, size, mtime) of every file of a folder) and the decode settings. A changed file
gives a new key, so a stale entry is never read. Writes go to a temporary file that is
renamed into place, so a crash or a concurrent run never leaves half an entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

VERSION = 2  # bump when the decoded content of an unchanged source would change
#   2: files read by data.image_input (EXIF orientation, transparency on white)


def cache_dir(configured: str | None) -> Path:
    """cfg.cache_dir, else $ATTNCNN_CACHE, else ~/.cache/attncnn."""
    return Path(configured or os.environ.get("ATTNCNN_CACHE") or Path.home() / ".cache" / "attncnn").expanduser()


def file_identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def tree_identity(root: Path, files: list[Path]) -> str:
    """A digest of the sorted (relpath, size, mtime) of `files` under `root`."""
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def key_of(identity: dict) -> str:
    blob = json.dumps({"version": VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached(directory: Path, label: str, identity: dict, build: Callable[[], dict]) -> dict:
    """The entry for `identity`: read from `directory` if there, else `build()` and store it.

    label: a readable file-name prefix, e.g. "folder-cifar10-jpeg-train".
    """
    path = directory / f"{label}-{key_of(identity)}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable entry is rebuilt, not fatal
            pass
    entry = build()
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(entry, f)
        os.chmod(tmp, 0o644)            # mkstemp makes it private; a cache is shareable
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache dir costs time on the next run, not correctness
    finally:  # any failure, Ctrl-C too, removes the temp file (after the rename there is none)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return entry

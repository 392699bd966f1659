"""Files written whole and checked whole.

Atomic replacement: write a temp file beside the target, then rename it over.

    with atomic_target(path) as tmp:
        tmp.write_text(text)

A reader, or a crash, sees the old file or the complete new one, never half of one; and a
write that fails (a full disk, an object that does not serialise, Ctrl-C) leaves no temp
file behind. `replace_marked_section` rewrites the part of a text file between two marker
lines that way (the README's generated tables); `sha256_file` is the checksum recorded for
weights files.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

from attncnn.errors import AttncnnError


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; when the block ends normally it replaces `path`, and
    when anything is raised, the rename included, the temp file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # hidden; the pid keeps writers apart
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_marked_section(path: str | Path, begin: str, end: str, body: str) -> None:
    """Put `body` between the markers `begin` and `end` of the text file `path`, keeping
    everything else (the markers included); one AttncnnError line when the file cannot be
    read or lacks the markers."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise AttncnnError(f"README {path}: {err.strerror}") from None
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < 0 or stop < start:
        raise AttncnnError(f"{path} lacks the markers {begin} ... {end} (in that order)")
    with atomic_target(path) as tmp:
        tmp.write_text(text[: start + len(begin)] + "\n" + body.rstrip() + "\n" + text[stop:])


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Atomic file replacement: write a temp file beside the target, then rename it over.

    with atomic_target(path) as tmp:
        tmp.write_text(text)

A reader, or a crash, sees the old file or the complete new one, never half of one; and a
write that fails (a full disk, an object that does not serialise, Ctrl-C) leaves no temp
file behind.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


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

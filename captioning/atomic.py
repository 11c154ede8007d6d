"""Every file we write appears whole or not at all: written under a temporary name, then renamed.

``os.replace`` is atomic on one file system, so a kill at any instant leaves either the old file or
the new one, never a truncated mix. The temporary name keeps the suffix, because some writers
(``model.save``) choose the format by it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename, so a power cut cannot publish an empty file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename and Path(e.filename) == tmp:  # the user named ``path``; the temporary name means nothing
            e.filename = str(path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # never made: nothing to remove
            tmp.unlink()


def write_text(path, text: str) -> Path:
    with replacing(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def remove_leftovers(folder) -> list:
    """Temporary files a killed writer left in ``folder``; call only while holding its writer lock."""
    removed = []
    for p in Path(folder).glob(".*.tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed

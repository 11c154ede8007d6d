"""One writer at a time: an advisory lock beside the file or folder being written.

``fcntl.flock`` locks belong to the open file, so the kernel releases them when the process dies,
even by kill -9: a stale lock never blocks the next run. The lock file holds the owner's PID, so
a refused run can say which process holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from captioning.errors import CaptioningError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent writers are not detected there
    fcntl = None


class WriterLock:
    def __init__(self, target, what: str):
        self.path = Path(str(target) + ".lock")
        self.target, self.what = Path(target), what
        self._fd = None

    def acquire(self) -> "WriterLock":
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CaptioningError(f"{self.target} is being written by another {self.what} (process {owner}). Wait "
                                  "for it to finish, or stop it; two writers would mix their work.") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock; the file itself may stay
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

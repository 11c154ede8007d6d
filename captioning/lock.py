"""One writer at a time: an advisory lock beside the file or folder being written.

``fcntl.flock`` locks belong to the open file, so the kernel releases them when the process dies,
even by kill -9: a stale lock never blocks the next run. The lock file holds the owner's PID, so
a refused run can say which process holds it. A finished writer removes its lock file (one killed
leaves it, harmless); removing it is done while still holding the lock, and a writer checks after
locking that the path still names the file it locked, so two writers never hold two files.
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
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CaptioningError(f"{self.target} is being written by another {self.what} (process {owner}). "
                                      "Wait for it to finish, or stop it; two writers would mix their work.") from None
            if self._still_named(fd):
                break
            os.close(fd)  # the previous writer removed this file as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def _still_named(self, fd) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def holder(self) -> str | None:
        """The PID of the process writing the target now, or None when no one is."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at close: only a probe
            return None
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: no one can have locked it meanwhile
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

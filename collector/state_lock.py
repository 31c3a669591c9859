"""One running bbaudit per state directory.

Two processes on one ``state_dir`` would both read the same checkpoints, send
everything twice and overwrite each other's dedupe set and detection state.
``StateDirLock`` holds an exclusive ``flock`` on the directory itself while the
service runs, and writes its pid to ``<state_dir>/bbaudit.lock`` for the error
message of the next one. Locking the directory, not a file in it, means
deleting the lock file cannot let a second process in. The kernel drops the
lock when the process dies, even by ``kill -9``, so a crash never leaves a
stale lock behind.

Locks on network file systems depend on the server (NFS v4 honours them);
with a Kubernetes volume that allows one writer (ReadWriteOnce) this is a
second guard, not the only one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = "bbaudit.lock"


class StateDirLock:
    """An exclusive, non-blocking lock on a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``OSError(EBUSY)`` naming the holder's pid."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(
                errno.EBUSY,
                f"state_dir {self.state_dir} is in use by another bbaudit "
                f"process (pid {_read_pid(self.path)}); run one per state directory",
            ) from None

        self._fd = fd
        try:
            self.path.write_text(f"{os.getpid()}\n", encoding="ascii")
        except OSError:
            self.release()  # a read-only state_dir is no use to the service
            raise

    def release(self) -> None:
        """Drop the lock. Idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_pid(path: Path) -> str:
    """The pid the holder wrote, for the error message ('?' if unreadable)."""
    try:
        with path.open("rb") as handle:
            text = handle.read(32).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"

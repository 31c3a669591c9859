"""One running bbaudit per state directory.

Two processes on one ``state_dir`` would both read the same checkpoints, send
everything twice and overwrite each other's dedupe set and detection state.
``StateDirLock`` holds an exclusive ``flock`` on ``<state_dir>/bbaudit.lock``
while the service runs. The kernel drops the lock when the process dies, even
by ``kill -9``, so a crash never leaves a stale lock behind.

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
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``OSError(EBUSY)`` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise OSError(
                errno.EBUSY,
                f"state_dir {self.path.parent} is in use by another bbaudit "
                f"process (pid {holder}); run one per state directory",
            ) from None

        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. Idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> str:
    """The pid the holder wrote, for the error message ('?' if unreadable)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"

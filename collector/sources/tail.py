"""Rotation-aware tailing of a glob of line-oriented log files.

A ``Tailer`` follows every file that matches a glob: it reads complete lines
only, in bounded chunks, and keeps per file an identity and the byte offset
just past the last complete line it handed out. ``checkpoint()`` returns that
state as JSON-ready data; ``restore()`` takes it back, so a restart resumes at
the exact line (at-least-once: lines handed out but not acknowledged are read
again).

Identity is ``(st_dev, st_ino)`` plus a SHA-256 of the first bytes of the file
(up to ``fingerprint_bytes``). The fingerprint tells a reused inode, or a file
truncated and rewritten in place, from the file we read before. How rotation
schemes are handled:

- rename + new file: the old inode is found under its new name and read to the
  end; the new file is a new identity, read from 0. Older files (by mtime, then
  name) are read first.
- rename out of the glob, or deletion: the file descriptor the tailer holds
  still reads the old inode, which is drained and then forgotten.
- copytruncate: the original inode shrinks below the read position (logged as
  truncated) and is read again from 0; if the copy lands inside the glob, its
  fingerprint matches the old state and reading continues there at the old
  offset, so the lines written just before the copy are not lost.

The tailer is synchronous (plain file I/O); ``tail_reads`` drives it from
asyncio in a worker thread and polls with ``stat`` (no inotify).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import Field

from collector.settings_types import ByteSize, Duration, PluginSettings

logger = structlog.get_logger(__name__)

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_CHUNK_BYTES = 64 * 1024
DEFAULT_FINGERPRINT_BYTES = 1024
DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL = 1.0
CHECKPOINT_VERSION = 1


class TailSettings(PluginSettings):
    """Settings every file-tailing source shares (``path`` is set per kind)."""

    path: str
    instance: str = ""
    poll_interval: Duration = DEFAULT_POLL_INTERVAL
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    max_line_bytes: ByteSize = Field(default=DEFAULT_MAX_LINE_BYTES, ge=256)
    from_beginning: bool = True


@dataclass(frozen=True, slots=True)
class TailLine:
    """One complete line, decoded, without its line terminator."""

    path: str
    line_no: int
    offset: int
    text: str
    size: int  # bytes read for the line, terminator excluded


@dataclass(frozen=True, slots=True)
class TailSkip:
    """A line the tailer could not hand out (already logged by the tailer).

    ``reason`` is ``line_too_long`` or ``not_utf8``.
    """

    path: str
    line_no: int
    offset: int
    reason: str


TailItem = TailLine | TailSkip


@dataclass(frozen=True, slots=True)
class TailRead:
    """What one ``Tailer.read`` returned, with the checkpoint that covers it."""

    items: list[TailItem]
    checkpoint: dict[str, Any]
    caught_up: bool


@dataclass(slots=True)
class _FileState:
    path: str
    dev: int
    ino: int
    fingerprint: str
    fp_len: int
    offset: int = 0
    line_no: int = 0
    # Runtime only: where the next read starts, the bytes of the unfinished
    # line between ``offset`` and ``read_pos``, the open descriptor.
    read_pos: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    skipping: bool = False
    fd: int | None = None
    size: int = -1
    mtime_ns: int = 0
    orphan: bool = False

    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "fingerprint": self.fingerprint,
            "fp_len": self.fp_len,
            "offset": self.offset,
            "line": self.line_no,
        }

    def rewind(self, offset: int = 0, line_no: int = 0) -> None:
        self.offset = offset
        self.read_pos = offset
        self.line_no = line_no
        self.buffer.clear()
        self.skipping = False


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Tailer:
    """Follows the files matching ``pattern``; see the module docstring.

    ``label`` names the owner (a source name) in log events. Lines longer than
    ``max_line_bytes`` and lines that are not UTF-8 are logged with file, line
    number and offset, and returned as ``TailSkip`` so the caller can count
    them. A line without its newline yet is held back until it is completed.
    """

    def __init__(
        self,
        pattern: str,
        *,
        label: str,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        fingerprint_bytes: int = DEFAULT_FINGERPRINT_BYTES,
        from_beginning: bool = True,
    ) -> None:
        self.pattern = pattern
        self.label = label
        self.max_line_bytes = max_line_bytes
        self.chunk_bytes = chunk_bytes
        self.fingerprint_bytes = fingerprint_bytes
        self.from_beginning = from_beginning
        self._states: list[_FileState] = []
        self._restored = False
        self._first_scan_done = False
        self._needs_scan = True

    # Checkpoints

    def restore(self, checkpoint: Any | None) -> None:
        """Take back a checkpoint from ``checkpoint()``; ``None`` starts fresh.

        A checkpoint that cannot be read is logged and ignored: every file is
        then read from the beginning (duplicates rather than loss).
        """
        self.close()
        self._states = []
        self._first_scan_done = False
        self._needs_scan = True
        self._restored = checkpoint is not None
        if checkpoint is None:
            return

        try:
            self._states = _states_from_json(checkpoint)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning(
                "tail.checkpoint_invalid", source=self.label, reason=str(exc)[:200]
            )
            self._states = []

    def checkpoint(self) -> dict[str, Any]:
        """The state of every tracked file, JSON-ready."""
        files = [s.to_json() for s in self._states]
        return {"version": CHECKPOINT_VERSION, "files": files}

    # Reading

    def read(self, max_lines: int) -> TailRead:
        """Read up to ``max_lines`` items from where the last read stopped.

        ``caught_up`` is set when every file matching the glob (looked at again
        within this call for new, rotated and vanished files) was read to its
        end, apart from an unfinished last line.
        """
        items: list[TailItem] = []
        scanned = False
        while True:
            if self._needs_scan:
                self._scan()
                self._needs_scan = False
                scanned = True

            for state in self._reading_order():
                if not self._read_file(state, items, max_lines):
                    return TailRead(items, self.checkpoint(), caught_up=False)
            self._forget_orphans()
            self._needs_scan = True

            # Caught up only counts after a look at the glob in this same call:
            # files may have rotated since the previous partial read.
            if scanned:
                return TailRead(items, self.checkpoint(), caught_up=True)

    def close(self) -> None:
        """Close every file descriptor. Idempotent; state is kept."""
        for state in self._states:
            _close(state)

    # Scanning the glob

    def _scan(self) -> None:
        entries = _glob_files(self.pattern)
        by_key = {s.key(): s for s in self._states if not s.orphan}
        matched: set[tuple[int, int]] = set()
        fresh: list[tuple[str, os.stat_result]] = []
        lost: list[_FileState] = []

        for path, st in entries:
            state = by_key.get((st.st_dev, st.st_ino))
            if state is None:
                fresh.append((path, st))
                continue
            matched.add(state.key())
            if not self._refresh(state, path, st):
                # Same inode, other content: the old state looks for its copy
                # among the new files below; this inode starts over.
                lost.append(state)
                self._states.remove(state)
                _close(state)
                state.fd = None
                fresh.append((path, st))
                matched.discard(state.key())

        lost.extend(s for s in self._states if s.key() not in matched and not s.orphan)
        for path, st in fresh:
            self._adopt(path, st, lost)
        self._drop_lost(lost)
        self._first_scan_done = True

    def _refresh(self, state: _FileState, path: str, st: os.stat_result) -> bool:
        """Check a known inode; False when its content is no longer ours."""
        unchanged = (
            state.size == st.st_size
            and state.mtime_ns == st.st_mtime_ns
            and state.path == path
        )
        if unchanged:
            return True

        if st.st_size < state.read_pos:
            # Treated like a replaced file, so that a copy made by copytruncate
            # can still take over the old offset.
            logger.warning(
                "tail.file_truncated",
                source=self.label,
                file=path,
                offset=state.offset,
                size=st.st_size,
            )
            return False

        head = self._head(path, state)
        if head is None or _digest(head[: state.fp_len]) != state.fingerprint:
            logger.warning(
                "tail.file_replaced",
                source=self.label,
                file=path,
                offset=state.offset,
                size=st.st_size,
            )
            return False
        if len(head) < state.fp_len:
            return False

        if state.path != path:
            logger.info(
                "tail.file_renamed", source=self.label, old=state.path, new=path
            )
            state.path = path

        state.fingerprint, state.fp_len = _digest(head), len(head)
        state.size, state.mtime_ns = st.st_size, st.st_mtime_ns
        return True

    def _adopt(self, path: str, st: os.stat_result, lost: list[_FileState]) -> None:
        """Start tracking a file the last scan did not know by inode."""
        head = self._head(path, None)
        if head is None:
            return

        for state in lost:
            if _is_copy_of(state, head, st):
                lost.remove(state)
                logger.info(
                    "tail.file_reidentified",
                    source=self.label,
                    old=state.path,
                    new=path,
                    offset=state.offset,
                )
                _close(state)
                state.path, state.dev, state.ino = path, st.st_dev, st.st_ino
                state.fd = None
                state.rewind(state.offset, state.line_no)
                self._remember(state, head, st)
                return

        state = _FileState(path, st.st_dev, st.st_ino, _digest(head), len(head))
        if self._restored or self._first_scan_done or self.from_beginning:
            logger.info("tail.file_opened", source=self.label, file=path)
        else:
            start = self._last_line_end(path, st.st_size)
            state.rewind(start)
            logger.info("tail.file_opened", source=self.label, file=path, offset=start)
        self._remember(state, head, st)

    def _remember(self, state: _FileState, head: bytes, st: os.stat_result) -> None:
        state.fingerprint, state.fp_len = _digest(head), len(head)
        state.size, state.mtime_ns = st.st_size, st.st_mtime_ns
        self._states.append(state)

    def _drop_lost(self, lost: list[_FileState]) -> None:
        """Drain lost files still open; forget the others."""
        for state in lost:
            if state.fd is not None and state in self._states:
                state.orphan = True
                continue
            if state in self._states:
                self._states.remove(state)
            logger.info(
                "tail.file_forgotten",
                source=self.label,
                file=state.path,
                offset=state.offset,
            )

    def _forget_orphans(self) -> None:
        for state in [s for s in self._states if s.orphan]:
            _close(state)
            self._states.remove(state)
            logger.info(
                "tail.file_forgotten",
                source=self.label,
                file=state.path,
                offset=state.offset,
            )

    def _head(self, path: str, state: _FileState | None) -> bytes | None:
        """The first ``fingerprint_bytes`` of a file, via its open fd if any."""
        try:
            if state is not None and state.fd is not None and state.path == path:
                return os.pread(state.fd, self.fingerprint_bytes, 0)
            with open(path, "rb") as handle:
                return handle.read(self.fingerprint_bytes)
        except OSError as exc:
            logger.warning(
                "tail.file_unreadable", source=self.label, file=path, reason=str(exc)
            )
            return None

    def _last_line_end(self, path: str, size: int) -> int:
        """Offset just past the last newline, to start a file at its end."""
        window = min(size, self.max_line_bytes)
        try:
            with open(path, "rb") as handle:
                handle.seek(size - window)
                tail = handle.read(window)
        except OSError:
            return size
        newline = tail.rfind(b"\n")
        return size - window + newline + 1 if newline >= 0 else size

    # Reading one file

    def _reading_order(self) -> list[_FileState]:
        return sorted(self._states, key=lambda s: (not s.orphan, s.mtime_ns, s.path))

    def _read_file(self, state: _FileState, items: list[TailItem], limit: int) -> bool:
        """Read ``state`` until its end (True) or until ``limit`` items (False)."""
        fd = state.fd if state.fd is not None else self._open(state)
        if fd is None:
            return True

        while not self._drain(state, items, limit):
            try:
                chunk = os.pread(fd, self.chunk_bytes, state.read_pos)
            except OSError as exc:
                logger.warning(
                    "tail.read_failed",
                    source=self.label,
                    file=state.path,
                    reason=str(exc),
                )
                return True
            if not chunk:
                return True
            state.read_pos += len(chunk)
            if not state.skipping:
                state.buffer += chunk
            else:
                self._skip_until_newline(state, chunk)
        return False

    def _open(self, state: _FileState) -> int | None:
        try:
            fd = os.open(state.path, os.O_RDONLY)
        except OSError as exc:
            logger.warning(
                "tail.file_unreadable",
                source=self.label,
                file=state.path,
                reason=str(exc),
            )
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != state.key():
            # Rotated between the scan and the open: look again next time.
            os.close(fd)
            return None
        state.fd = fd
        return fd

    def _skip_until_newline(self, state: _FileState, chunk: bytes) -> None:
        # While skipping an overlong line only the bytes after its end are kept,
        # so memory stays bounded whatever the line length.
        newline = chunk.find(b"\n")
        if newline >= 0:
            state.buffer += chunk[newline:]

    def _drain(self, state: _FileState, items: list[TailItem], limit: int) -> bool:
        """Move complete lines from the buffer to ``items``; True at ``limit``."""
        while len(items) < limit:
            newline = state.buffer.find(b"\n")
            if newline < 0:
                self._check_overlong(state)
                return False

            raw = bytes(state.buffer[:newline])
            del state.buffer[: newline + 1]
            start = state.offset
            state.offset = state.read_pos - len(state.buffer)
            state.line_no += 1
            if state.skipping:
                state.skipping = False
                items.append(
                    TailSkip(state.path, state.line_no, start, "line_too_long")
                )
                continue

            item = self._decode(state, raw, start)
            if item is not None:
                items.append(item)
        return True

    def _check_overlong(self, state: _FileState) -> None:
        if state.skipping or len(state.buffer) <= self.max_line_bytes:
            return
        logger.error(
            "tail.line_too_long",
            source=self.label,
            file=state.path,
            line=state.line_no + 1,
            offset=state.offset,
            max_line_bytes=self.max_line_bytes,
        )
        state.skipping = True
        state.buffer.clear()

    def _decode(self, state: _FileState, raw: bytes, start: int) -> TailItem | None:
        if len(raw) > self.max_line_bytes:
            logger.error(
                "tail.line_too_long",
                source=self.label,
                file=state.path,
                line=state.line_no,
                offset=start,
                max_line_bytes=self.max_line_bytes,
            )
            return TailSkip(state.path, state.line_no, start, "line_too_long")

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            logger.error(
                "tail.line_not_utf8",
                source=self.label,
                file=state.path,
                line=state.line_no,
                offset=start,
                byte_offset=start + exc.start,
            )
            return TailSkip(state.path, state.line_no, start, "not_utf8")

        text = text.rstrip("\r")
        if not text.strip():
            return None
        return TailLine(state.path, state.line_no, start, text, len(raw))


async def tail_reads(
    tailer: Tailer,
    *,
    batch_size: int,
    poll_interval: float,
    follow: bool,
) -> AsyncIterator[TailRead]:
    """Drive ``tailer`` from asyncio: one ``TailRead`` per batch.

    Reads run in a worker thread. Without ``follow`` it stops after the first
    read that is caught up (always yielded, so the caller sees ``caught_up``).
    With ``follow`` it polls every ``poll_interval`` seconds and yields only
    when there are items or the checkpoint moved.
    """
    last_checkpoint: dict[str, Any] | None = None
    reported_caught_up = False
    while True:
        read = await asyncio.to_thread(tailer.read, batch_size)

        changed = bool(read.items) or read.checkpoint != last_checkpoint
        if not follow or changed or (read.caught_up and not reported_caught_up):
            yield read
            last_checkpoint = read.checkpoint
        # A caught-up read that was not yielded only happens after one that was.
        reported_caught_up = read.caught_up

        if not read.caught_up:
            continue
        if not follow:
            return
        await asyncio.sleep(poll_interval)


def _glob_files(pattern: str) -> list[tuple[str, os.stat_result]]:
    """Regular files matching ``pattern``, oldest first (mtime, then name)."""
    entries = []
    for path in glob.glob(pattern):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            entries.append((path, st))
    entries.sort(key=lambda e: (e[1].st_mtime_ns, e[0]))
    return entries


def _is_copy_of(state: _FileState, head: bytes, st: os.stat_result) -> bool:
    # An empty fingerprint matches everything; a short file must still hold
    # every byte we already read.
    return (
        state.fp_len > 0
        and len(head) >= state.fp_len
        and st.st_size >= state.offset
        and _digest(head[: state.fp_len]) == state.fingerprint
    )


def _close(state: _FileState) -> None:
    if state.fd is not None:
        with contextlib.suppress(OSError):
            os.close(state.fd)
        state.fd = None


def _states_from_json(checkpoint: Any) -> list[_FileState]:
    if not isinstance(checkpoint, Mapping):
        raise TypeError("checkpoint is not a mapping")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"unknown checkpoint version {checkpoint.get('version')!r}")

    states = []
    for item in checkpoint["files"]:
        state = _FileState(
            path=str(item["path"]),
            dev=int(item["dev"]),
            ino=int(item["ino"]),
            fingerprint=str(item["fingerprint"]),
            fp_len=int(item["fp_len"]),
        )
        state.rewind(int(item["offset"]), int(item.get("line", 0)))
        states.append(state)
    return states

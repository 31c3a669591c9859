"""The JSONL file sink: one rendered record per line, appended.

A batch is acknowledged only after it has been written and (by default) fsynced,
so the checkpoint never moves past records that a crash could lose. JSON escapes
CR and LF inside strings, so no value can split a line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from collector.errors import SinkClosedError, SinkUnavailableError
from collector.model import Record
from collector.plugins import SINKS, Runtime
from sinks.base import SinkSettings
from sinks.render import render


class FileSinkSettings(SinkSettings):
    """``path`` of the JSONL file; ``fsync`` makes each acknowledged batch durable."""

    path: Path
    fsync: bool = True


class FileSink:
    """Appends records as JSON lines to one file."""

    def __init__(self, settings: FileSinkSettings) -> None:
        self.name = settings.name
        self._settings = settings
        self._file: IO[bytes] | None = None
        self._closed = False

    async def start(self) -> None:
        """Open (and create) the file for appending."""
        path = self._settings.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: _write must know exactly which bytes reached the file.
            self._file = path.open("ab", buffering=0)
        except OSError as exc:
            raise SinkUnavailableError(
                f"cannot open {path}: {exc}", sink=self.name
            ) from exc

    async def send(self, records: Sequence[Record]) -> None:
        """Write the batch; return once it is on disk."""
        if self._closed:
            raise SinkClosedError(self.name)
        if self._file is None:
            await self.start()
        payload = b"".join(orjson.dumps(self._render(r)) + b"\n" for r in records)
        try:
            await asyncio.to_thread(self._write, payload)
        except OSError as exc:
            raise SinkUnavailableError(f"write failed: {exc}", sink=self.name) from exc

    def _render(self, record: Record) -> dict[str, object]:
        settings = self._settings
        return render(record, settings.format, original=settings.include_original)

    def _write(self, payload: bytes) -> None:
        """Append the whole payload or nothing.

        A write that fails part-way (a full disk) is cut back to where the
        batch began, so the retry cannot leave a torn line in the file.
        """
        assert self._file is not None
        fd = self._file.fileno()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if self._settings.fsync:
                os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)
            raise

    async def aclose(self) -> None:
        """Close the file. Idempotent."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


def _build(settings: FileSinkSettings, runtime: Runtime) -> FileSink:
    return FileSink(settings)


SINKS.register("file", FileSinkSettings, _build, "JSON lines appended to a file")

"""The stdout sink: rendered records as JSON lines on standard output."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import orjson

from collector.model import Record
from collector.plugins import SINKS, Runtime
from sinks.base import SinkSettings
from sinks.render import render


class StdoutSinkSettings(SinkSettings):
    """No options beyond routing and format."""


class StdoutSink:
    """Writes each record as one JSON line to stdout and flushes per batch."""

    def __init__(self, settings: StdoutSinkSettings) -> None:
        self.name = settings.name
        self._format = settings.format
        self._original = settings.include_original

    async def start(self) -> None:
        """Nothing to open."""

    async def send(self, records: Sequence[Record]) -> None:
        """Write and flush the batch."""
        out = sys.stdout.buffer
        for record in records:
            out.write(
                orjson.dumps(render(record, self._format, original=self._original))
                + b"\n"
            )
        out.flush()

    async def aclose(self) -> None:
        """Flush. Idempotent."""
        sys.stdout.flush()


def _build(settings: StdoutSinkSettings, runtime: Runtime) -> StdoutSink:
    return StdoutSink(settings)


SINKS.register("stdout", StdoutSinkSettings, _build, "JSON lines on standard output")

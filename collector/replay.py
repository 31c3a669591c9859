"""Offline replay: run files of recorded Bitbucket audit data through the same
stages as the live service.

Each file's format is detected from its content, not its name:

- a JSON document with ``entities`` (a DC REST page) or ``data`` (a Cloud
  events-stream page), or JSON lines of such pages;
- JSON lines of DC REST entities (``type``), DC audit-file lines
  (``auditType``) or Cloud events (``data[]`` items);
- anything else is read as a DC access log (pipe-separated lines).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from collector.errors import EventParseError
from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.normalize.dc import detect_dc_shape, normalize_dc
from collector.plugins import SOURCES, Runtime
from collector.stages import Source, SourceBatch

log = structlog.get_logger(__name__)

FileFormat = Literal["json_pages", "json_lines", "access_log"]

_SNIFF_BYTES = 64 * 1024
_MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
_BATCH_SIZE = 500


def sniff_format(path: Path) -> FileFormat:
    """Tell a whole-JSON page file, a JSON-lines file and an access log apart."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        return "json_lines"
    first_line = head.split(b"\n", 1)[0].strip()
    if first_line.startswith(b"{"):
        try:
            orjson.loads(first_line)
            return "json_lines"
        except orjson.JSONDecodeError:
            return "json_pages"
    if head.startswith((b"{", b"[")):
        return "json_pages"
    return "access_log"


class ReplaySource:
    """Reads recorded files once, in order, as one source named ``replay``."""

    kind = "replay"

    def __init__(
        self,
        paths: list[Path],
        *,
        instance: str,
        metrics: Metrics,
        runtime: Runtime,
        name: str = "replay",
    ) -> None:
        self.name = name
        self._paths = paths
        self._instance = instance
        self._metrics = metrics
        self._runtime = runtime
        self.files_read: dict[str, str] = {}
        self._unreported_rejects = 0

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Yield every file's events in batches; the last batch is caught up."""
        for path in self._paths:
            fmt = sniff_format(path)
            self.files_read[str(path)] = fmt
            log.info("replay.file_started", file=str(path), format=fmt)
            if fmt == "access_log":
                async for batch in self._access_log(path):
                    yield batch
                continue
            for batch in self._json_batches(path, fmt):
                yield batch
        yield SourceBatch(self.name, [], caught_up=True)

    async def aclose(self) -> None:
        """Nothing held open between batches."""

    def _json_batches(self, path: Path, fmt: FileFormat) -> Iterator[SourceBatch]:
        events: list[AuditEvent] = []
        for position, record in self._json_records(path, fmt):
            try:
                events.append(self._normalize(record))
            except Exception as exc:  # one bad record must not end the replay
                self._reject(str(path), position, exc)
            if len(events) >= _BATCH_SIZE:
                yield SourceBatch(self.name, events, rejected=self._take_rejects())
                events = []
        if events or self._unreported_rejects:
            yield SourceBatch(self.name, events, rejected=self._take_rejects())

    def _take_rejects(self) -> int:
        count, self._unreported_rejects = self._unreported_rejects, 0
        return count

    def _json_records(self, path: Path, fmt: FileFormat) -> Iterator[tuple[str, Any]]:
        """(position, record) pairs; pages are opened into their entries."""
        if fmt == "json_pages":
            yield from self._page_records(path)
            return
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if number == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM
                if not line.strip():
                    continue
                position = f"line {number}"
                try:
                    document = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    self._reject(str(path), position, exc)
                    continue
                yield from _open_page(document, position)

    def _page_records(self, path: Path) -> Iterator[tuple[str, Any]]:
        size = path.stat().st_size
        if size > _MAX_DOCUMENT_BYTES:
            self._reject(str(path), "byte 0", ValueError(f"document of {size} bytes"))
            return
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            self._reject(str(path), f"byte {_error_offset(exc)}", exc)
            return
        pages = document if isinstance(document, list) else [document]
        for index, page in enumerate(pages):
            yield from _open_page(page, f"page {index + 1}")

    def _normalize(self, record: Any) -> AuditEvent:
        if not isinstance(record, dict):
            raise TypeError(f"expected a JSON object, got {type(record).__name__}")
        if detect_dc_shape(record) is not None:
            kind = "dc_file" if "auditType" in record else "dc_rest"
            return normalize_dc(record, instance=self._instance, source_kind=kind)
        if "attributes" in record:
            from collector.normalize.cloud import normalize_cloud

            return normalize_cloud(record, instance=self._instance, source_kind="cloud")
        raise ValueError("not a DC audit record nor a Cloud event")

    async def _access_log(self, path: Path) -> AsyncIterator[SourceBatch]:
        plugin = SOURCES.get("dc_access_log", "replay")
        settings = plugin.settings.model_validate(
            {
                "kind": "dc_access_log",
                "name": self.name,
                "path": str(path),
                "instance": self._instance,
            }
        )
        source: Source = plugin.factory(settings, self._runtime)
        try:
            async for batch in source.batches(None, follow=False):
                batch.source = self.name
                batch.checkpoint = None
                batch.caught_up = False
                yield batch
        finally:
            await source.aclose()

    def _reject(self, source: str, position: str, exc: BaseException) -> None:
        error = EventParseError(str(exc)[:200], source=source, position=position)
        self._unreported_rejects += 1
        self._metrics.events_rejected.labels(self.name, type(exc).__name__).inc()
        log.error(
            "source.record_rejected",
            source=error.source,
            position=error.position,
            reason=error.reason,
        )


def _open_page(document: Any, position: str) -> Iterator[tuple[str, Any]]:
    """A DC page's entities or a Cloud page's data items; else the record itself."""
    if isinstance(document, dict):
        for key in ("entities", "data"):
            items = document.get(key)
            if isinstance(items, list):
                for index, item in enumerate(items):
                    yield f"{position}, {key}[{index}]", item
                return
    yield position, document


def _error_offset(exc: orjson.JSONDecodeError) -> int:
    return int(getattr(exc, "pos", 0) or 0)

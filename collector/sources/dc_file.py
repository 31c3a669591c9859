"""Source ``dc_file``: the Data Center audit log files, one JSON object a line.

Bitbucket writes ``<home>/log/audit/*.log`` on every cluster node, rotating at
midnight or at 100 MB and keeping 100 files; run one source per node (or point
the glob at a shared mount). Each line goes through
``collector.normalize.dc.normalize_dc`` with ``source_kind="dc_file"``, so a file
line and the REST entity of the same audit event get the same id.

The checkpoint is the tailer's (file identity and offset of every file), so a
restart resumes at the first line not yet acknowledged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
import structlog

from collector.model import AuditEvent
from collector.normalize.dc import normalize_dc
from collector.plugins import SOURCES, Runtime
from collector.sources.tail import (
    Tailer,
    TailLine,
    TailRead,
    TailSettings,
    TailSkip,
    tail_reads,
)
from collector.stages import SourceBatch

logger = structlog.get_logger(__name__)

KIND = "dc_file"
DEFAULT_PATH = "/var/atlassian/application-data/bitbucket/log/audit/*.log"


class DcFileSettings(TailSettings):
    """``path`` is a glob; ``instance`` defaults to the source name."""

    path: str = DEFAULT_PATH


class DcFileSource:
    """Tails the DC audit files and yields normalized audit events."""

    kind = KIND

    def __init__(self, settings: DcFileSettings, runtime: Runtime) -> None:
        self.name = settings.name or KIND
        self.settings = settings
        self.instance = settings.instance or self.name
        self._metrics = runtime.metrics
        self._tailer: Tailer | None = None

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncGenerator[SourceBatch, None]:
        """Yield batches from ``checkpoint`` on; see ``collector.stages.Source``."""
        tailer = Tailer(
            self.settings.path,
            label=self.name,
            max_line_bytes=self.settings.max_line_bytes,
            from_beginning=self.settings.from_beginning,
        )
        tailer.restore(checkpoint)
        self._tailer = tailer
        try:
            async for read in tail_reads(
                tailer,
                batch_size=self.settings.batch_size,
                poll_interval=self.settings.poll_interval,
                follow=follow,
            ):
                yield self._batch(read)
        finally:
            tailer.close()

    async def aclose(self) -> None:
        """Close the files. Idempotent."""
        if self._tailer is not None:
            self._tailer.close()

    def _batch(self, read: TailRead) -> SourceBatch:
        events: list[AuditEvent] = []
        rejected = 0
        for item in read.items:
            if isinstance(item, TailSkip):
                # The tailer has logged it with file, line and offset.
                self._count_rejected(item.reason)
                rejected += 1
                continue
            event = self._normalize(item)
            if event is None:
                rejected += 1
            else:
                events.append(event)

        return SourceBatch(
            source=self.name,
            events=events,
            checkpoint=read.checkpoint,
            rejected=rejected,
            caught_up=read.caught_up,
        )

    def _normalize(self, item: TailLine) -> AuditEvent | None:
        try:
            record = orjson.loads(item.text)
        except orjson.JSONDecodeError as exc:
            self._reject(item, "invalid_json", str(exc))
            return None

        try:
            return normalize_dc(
                record,
                instance=self.instance,
                source_kind=KIND,
                raw_size=item.size,
            )
        except Exception as exc:  # one bad record must not stop the source
            self._reject(item, "invalid_record", f"{type(exc).__name__}: {exc}")
            return None

    def _reject(self, item: TailLine, reason: str, detail: str) -> None:
        logger.error(
            "source.record_rejected",
            source=self.name,
            file=item.path,
            line=item.line_no,
            offset=item.offset,
            reason=reason,
            detail=detail[:300],
        )
        self._count_rejected(reason)

    def _count_rejected(self, reason: str) -> None:
        self._metrics.events_rejected.labels(self.name, reason).inc()


SOURCES.register(
    KIND, DcFileSettings, DcFileSource, "Data Center audit log files (log/audit/*.log)"
)

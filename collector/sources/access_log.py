"""Source ``dc_access_log``: git clone, fetch and push from the DC access log.

The audit log of Bitbucket Data Center records no clones, fetches or pushes;
the access log ``<home>/log/atlassian-bitbucket-access*.log`` does, one file set
per cluster node. Each git request that completes becomes one audit event, built
from its end line (``o…``), which carries status, bytes, labels and duration.
The start line (``i…``) is kept in a bounded map until its end line arrives and
is attached as ``raw["start_line"]``; it adds context, not facts, so a start
line evicted or lost across a restart costs nothing but that context.

The log's timestamps carry no zone offset: ``timezone`` (an IANA name, default
``UTC``) says which zone the Bitbucket JVM logs in. Set it to the server's
zone, e.g. ``Europe/Berlin``; a wrong zone shifts every event by the offset.
In the hour repeated when daylight saving ends, times are read as the first
of the two (``fold=0``).

REST, UI and other non-git requests, and ref advertisements (``git ls-remote``,
the first half of every fetch) unless ``include_refs`` is set, are skipped and
counted in ``bbaudit_access_log_lines_skipped_total``, not rejected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from pydantic import Field, IPvAnyNetwork, field_validator

from collector.model import AuditEvent
from collector.normalize.access_log import (
    AccessLine,
    detect_git_operation,
    parse_access_line,
    to_audit_event,
)
from collector.plugins import SOURCES, Runtime
from collector.settings_types import Duration
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

KIND = "dc_access_log"
DEFAULT_PATH = (
    "/var/atlassian/application-data/bitbucket/log/atlassian-bitbucket-access*.log"
)
DEFAULT_MAX_PENDING_STARTS = 10_000
DEFAULT_START_TTL = 6 * 3600.0


class AccessLogSettings(TailSettings):
    """``path`` is a glob; ``instance`` defaults to the source name."""

    path: str = DEFAULT_PATH
    timezone: str = "UTC"
    include_refs: bool = False
    max_pending_starts: int = Field(default=DEFAULT_MAX_PENDING_STARTS, ge=0)
    start_ttl: Duration = DEFAULT_START_TTL
    # Reverse proxies and load balancers in front of Bitbucket (CIDRs). With
    # them, the client is the last address of a forwarded-for chain that is
    # not one of them, which a client cannot forge; without, the first.
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description=(
            "proxies in front of Bitbucket: the client is the last address of"
            " a forwarded-for chain outside them (without: the first)"
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Europe/Berlin"
            ) from exc
        return value


class _PendingStarts:
    """Start lines of git requests waiting for their end line, bounded in size
    and age; the oldest go first when either bound is hit."""

    def __init__(self, limit: int, ttl: float) -> None:
        self.limit = limit
        self.ttl = ttl
        self._lines: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, key: str, line: str, now: float) -> int:
        """Keep ``line``; return how many older entries were evicted."""
        self._lines[key] = (line, now)
        self._lines.move_to_end(key)
        evicted = 0
        while len(self._lines) > self.limit:
            self._lines.popitem(last=False)
            evicted += 1
        return evicted + self.expire(now)

    def pop(self, key: str) -> str | None:
        entry = self._lines.pop(key, None)
        return entry[0] if entry else None

    def expire(self, now: float) -> int:
        evicted = 0
        while self._lines:
            _, (_, added) = next(iter(self._lines.items()))
            if now - added <= self.ttl:
                break
            self._lines.popitem(last=False)
            evicted += 1
        return evicted


class AccessLogSource:
    """Tails the DC access logs and yields one audit event per git operation."""

    kind = KIND

    def __init__(self, settings: AccessLogSettings, runtime: Runtime) -> None:
        self.name = settings.name or KIND
        self.settings = settings
        self.instance = settings.instance or self.name
        self.timezone = ZoneInfo(settings.timezone)
        self._trusted_proxies = tuple(settings.trusted_proxies)
        self._metrics = runtime.metrics
        self._skipped = runtime.metrics.counter(
            "bbaudit_access_log_lines_skipped_total",
            "Access-log end lines that are no git operation (REST, UI, refs).",
            ["source", "reason"],
        )
        self._evicted = runtime.metrics.counter(
            "bbaudit_access_log_starts_evicted_total",
            "Start lines dropped before their end line came (limit or age).",
            ["source"],
        )
        self._pending_gauge = runtime.metrics.gauge(
            "bbaudit_access_log_pending_starts",
            "Start lines of git requests waiting for their end line.",
            ["source"],
        )
        self._pending = _PendingStarts(settings.max_pending_starts, settings.start_ttl)
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
            try:
                event = self._handle(item)
            except Exception as exc:  # one bad line must not stop the source
                self._reject(item, f"{type(exc).__name__}: {exc}")
                rejected += 1
                continue
            if event is not None:
                events.append(event)

        self._note_evicted(self._pending.expire(time.monotonic()))
        self._pending_gauge.labels(self.name).set(len(self._pending))
        return SourceBatch(
            source=self.name,
            events=events,
            checkpoint=read.checkpoint,
            rejected=rejected,
            caught_up=read.caught_up,
        )

    def _handle(self, item: TailLine) -> AuditEvent | None:
        """The audit event of one line, or ``None`` when it is not one."""
        record = parse_access_line(item.text, self._trusted_proxies)
        operation = detect_git_operation(record)
        if record.phase == "start":
            if operation is not None:
                self._remember_start(record)
            return None

        start_line = self._pending.pop(record.request_key)
        if operation is None:
            self._skipped.labels(self.name, "not_git").inc()
            return None
        if operation.operation == "refs" and not self.settings.include_refs:
            self._skipped.labels(self.name, "refs").inc()
            return None
        return to_audit_event(
            record,
            operation,
            instance=self.instance,
            timezone=self.timezone,
            start_line=start_line,
        )

    def _remember_start(self, record: AccessLine) -> None:
        evicted = self._pending.add(record.request_key, record.line, time.monotonic())
        self._note_evicted(evicted)

    def _note_evicted(self, count: int) -> None:
        if count:
            self._evicted.labels(self.name).inc(count)
            logger.debug("access_log.starts_evicted", source=self.name, count=count)

    def _reject(self, item: TailLine, detail: str) -> None:
        logger.error(
            "source.record_rejected",
            source=self.name,
            file=item.path,
            line=item.line_no,
            offset=item.offset,
            reason="invalid_line",
            detail=detail[:300],
        )
        self._count_rejected("invalid_line")

    def _count_rejected(self, reason: str) -> None:
        self._metrics.events_rejected.labels(self.name, reason).inc()


SOURCES.register(
    KIND,
    AccessLogSettings,
    AccessLogSource,
    "Data Center access log: git clone, fetch and push",
)

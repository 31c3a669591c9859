"""The asyncio pipeline: sources -> dedupe -> enrich -> detect -> route -> sinks.

Every queue is bounded: sources wait when the processor is behind, and the
processor waits when a sink's queue is full. A batch's checkpoint is committed
(``collector.acks``) only after every sink it was routed to has acknowledged
it, so a crash at any moment re-reads instead of losing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import structlog

from collector.acks import AckTracker
from collector.commits import CommitWriter
from collector.config import PipelineSettings
from collector.metrics import Metrics
from collector.model import Alert, AuditEvent, Record
from collector.stages import Detector, Source, SourceBatch
from collector.state import StateStore

log = structlog.get_logger(__name__)

_SOURCE_RESTART_DELAY_S = 5.0
_PRUNE_INTERVAL_S = 600.0
_SPOOL_POLL_S = 0.1


class Channel(Protocol):
    """What the pipeline needs of a sink's delivery channel (``sinks.delivery``)."""

    name: str
    healthy: bool

    @property
    def spool_records(self) -> int: ...
    def wants(self, record: Record) -> bool: ...
    async def start(self) -> None: ...
    async def submit(self, records: list[Record], ack: Callable[[], None]) -> None: ...
    async def drain(self) -> None: ...
    async def aclose(self) -> None: ...


EnrichFn = Callable[[Sequence[AuditEvent]], Awaitable[None]]


@dataclass(slots=True)
class PipelineStats:
    """Counts for the end-of-run summary and the readiness probe."""

    read: int = 0
    new: int = 0
    deduped: int = 0
    rejected: int = 0
    alerts: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    alerts_by_rule: Counter[str] = field(default_factory=Counter)
    last_batch_at: dict[str, float] = field(default_factory=dict)
    caught_up: set[str] = field(default_factory=set)
    source_failures: Counter[str] = field(default_factory=Counter)
    spooled_left: dict[str, int] = field(default_factory=dict)


class Pipeline:
    """Runs sources, enrichment, detection and delivery until stopped or caught up."""

    def __init__(
        self,
        *,
        sources: Sequence[Source],
        channels: Sequence[Channel],
        store: StateStore,
        metrics: Metrics,
        settings: PipelineSettings,
        enrich: EnrichFn | None = None,
        detector: Detector | None = None,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.sources = list(sources)
        self.channels = list(channels)
        self.stats = PipelineStats()
        self.draining = False
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._enrich = enrich
        self._detector = detector
        self._on_alert = on_alert
        self._queue: asyncio.Queue[SourceBatch | None] = asyncio.Queue(
            settings.queue_batches
        )
        self._commits = CommitWriter(
            store,
            self._landed,
            max_delay=settings.commit_interval,
            max_ids=settings.commit_max_ids,
        )
        self._tracker = AckTracker(store, self._count_commit, self._commits)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask the pipeline to drain and return (safe from a signal handler)."""
        self._stop.set()

    async def run(self, *, follow: bool) -> PipelineStats:
        """Run until stopped (``follow``) or until every source is caught up."""
        for channel in self.channels:
            await channel.start()
        if self._detector is not None:
            await self._detector.start()

        readers = [
            asyncio.create_task(
                self._read(source, follow), name=f"source:{source.name}"
            )
            for source in self.sources
        ]
        processor = asyncio.create_task(self._process(), name="processor")
        housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        try:
            await self._wait_until_done(readers, follow)
        finally:
            await self._shut_down(readers, processor, housekeeping, follow=follow)
        return self.stats

    async def _wait_until_done(
        self, readers: list[asyncio.Task[None]], follow: bool
    ) -> None:
        stop = asyncio.create_task(self._stop.wait())
        waiting: set[asyncio.Task[Any]] = {stop}
        if not follow:
            waiting.add(asyncio.create_task(asyncio.wait(readers)))
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()

    async def _shut_down(
        self,
        readers: list[asyncio.Task[None]],
        processor: asyncio.Task[None],
        housekeeping: asyncio.Task[None],
        *,
        follow: bool = True,
    ) -> None:
        """Stop reading, finish what was read, wait for the sinks, flush state."""
        self.draining = True
        log.info("pipeline.draining", pending_batches=self._tracker.pending_count())
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await self._queue.put(None)
        try:
            await asyncio.wait_for(
                self._finish(processor, empty_spools=not follow),
                self._settings.drain_timeout,
            )
        except TimeoutError:
            log.error(
                "pipeline.drain_timed_out",
                pending_batches=self._tracker.pending_count(),
                timeout_s=self._settings.drain_timeout,
            )
        housekeeping.cancel()
        processor.cancel()
        await asyncio.gather(processor, housekeeping, return_exceptions=True)
        self._report_spools()
        for channel in self.channels:
            await channel.aclose()
        # After the channels: a sink that finishes a batch while another one
        # closes still gets its commit written.
        await self._commits.aclose()
        if self._detector is not None:
            await self._detector.aclose()
        log.info("pipeline.stopped", pending_batches=self._tracker.pending_count())

    async def _finish(
        self, processor: asyncio.Task[None], *, empty_spools: bool
    ) -> None:
        await processor
        for channel in self.channels:
            await channel.drain()
        # A one-off run (--once) is expected to have sent everything, so it
        # also waits for the sinks' spools; a service stopping just leaves
        # them for its next start.
        while empty_spools:
            if not any(channel.spool_records for channel in self.channels):
                return
            await asyncio.sleep(_SPOOL_POLL_S)

    def _report_spools(self) -> None:
        for channel in self.channels:
            if channel.spool_records:
                log.warning(
                    "sink.spool_left",
                    sink=channel.name,
                    records=channel.spool_records,
                    note="kept on disk; sent when the service next runs",
                )
                self.stats.spooled_left[channel.name] = channel.spool_records

    async def _read(self, source: Source, follow: bool) -> None:
        """Feed one source's batches into the queue; restart it if it dies."""
        structlog.contextvars.bind_contextvars(component=f"source:{source.name}")
        while True:
            checkpoint = self._store.load_checkpoint(source.name)
            try:
                async for batch in source.batches(checkpoint, follow=follow):
                    await self._queue.put(batch)
                if not follow:
                    return
            except asyncio.CancelledError:
                await source.aclose()
                raise
            except Exception:
                self.stats.source_failures[source.name] += 1
                log.exception("source.crashed", source=source.name)
            if not follow:
                return
            await asyncio.sleep(_SOURCE_RESTART_DELAY_S)

    async def _process(self) -> None:
        """Take batches in order; dedupe, enrich, detect, route."""
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            self._metrics.queue_depth.labels("source_batches").set(self._queue.qsize())
            await self._handle(batch)

    async def _handle(self, batch: SourceBatch) -> None:
        events = self._dedupe(batch)
        if events and self._enrich is not None:
            await self._enrich(events)
        alerts = await self._detect(events)
        self._note(batch, events, alerts)

        records: list[Record] = [*events, *alerts]
        routes = [(ch, [r for r in records if ch.wants(r)]) for ch in self.channels]
        routes = [(ch, recs) for ch, recs in routes if recs]
        seq = self._tracker.open(
            batch.source, batch.checkpoint, [e.id for e in events], len(routes)
        )
        for channel, routed in routes:
            await channel.submit(routed, partial(self._tracker.ack, batch.source, seq))

    def _dedupe(self, batch: SourceBatch) -> list[AuditEvent]:
        """Drop events already delivered, already in flight, or twice in the batch."""
        self.stats.read += len(batch.events)
        self.stats.rejected += batch.rejected
        self._metrics.events_read.labels(batch.source).inc(len(batch.events))
        if not batch.events:
            return []

        unseen = self._store.unseen([e.id for e in batch.events])
        fresh: list[AuditEvent] = []
        taken: set[str] = set()
        for event in batch.events:
            if event.id not in unseen or event.id in taken:
                continue
            if not self._tracker.in_flight(event.id):
                fresh.append(event)
                taken.add(event.id)
        duplicates = len(batch.events) - len(fresh)
        if duplicates:
            self.stats.deduped += duplicates
            self._metrics.events_deduped.labels(batch.source).inc(duplicates)
        return fresh

    async def _detect(self, events: list[AuditEvent]) -> list[Alert]:
        if not events or self._detector is None:
            return []
        try:
            return await self._detector.detect(events)
        except Exception:
            # A rule bug must not stop delivery of the audit events themselves.
            log.exception("detection.failed", events=len(events))
            return []

    def _note(
        self, batch: SourceBatch, events: list[AuditEvent], alerts: list[Alert]
    ) -> None:
        self.stats.new += len(events)
        self.stats.last_batch_at[batch.source] = time.time()
        if batch.caught_up:
            self.stats.caught_up.add(batch.source)
        self.stats.actions.update(event.action for event in events)
        if not alerts:
            return
        self.stats.alerts += len(alerts)
        by_rule = Counter(alert.rule_id for alert in alerts)
        # bbaudit_alerts_total is counted by the detector, where alerts are made.
        self.stats.alerts_by_rule.update(by_rule)
        if self._on_alert is not None:
            for alert in alerts:
                self._on_alert(alert)

    def _landed(self, source: str, event_ids: list[str], batches: int) -> None:
        self._tracker.landed(source, event_ids, batches)

    def _count_commit(self, source: str, batches: int) -> None:
        self._metrics.checkpoint_commits.labels(source).inc()

    async def _housekeep(self) -> None:
        """Flush detection state and prune the dedupe set on a timer."""
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self._settings.flush_interval)
            if self._detector is not None:
                try:
                    await self._detector.flush()
                except Exception:
                    log.exception("detection.flush_failed")
            if time.monotonic() - last_prune > _PRUNE_INTERVAL_S:
                pruned = self._store.prune_seen(self._settings.dedupe_retention)
                self._store.kv_prune()
                last_prune = time.monotonic()
                log.debug("state.pruned", seen_ids=pruned)

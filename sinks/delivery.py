"""Delivery: the machinery between the pipeline and one sink, written once.

A ``DeliveryChannel`` owns a bounded queue in front of its sink (a full queue
makes ``submit`` wait, which slows the sources instead of growing memory),
merges queued work into batches by count, bytes and time, sends with a timeout,
retries with full-jitter backoff, and calls each submission's ``ack`` once the
sink has taken every record of it. It never drops a record: a sink that keeps
failing is marked unhealthy and retried with capped backoff until it recovers
or the process stops (and then the checkpoint has not moved, so a restart
re-reads what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from collector.errors import SinkError
from collector.metrics import Metrics
from collector.model import Alert, Record
from collector.stages import Sink
from sinks.base import SinkSettings

log = structlog.get_logger(__name__)

Ack = Callable[[], None]


@dataclass(slots=True)
class _Submission:
    records: list[Record]
    ack: Ack


class DeliveryChannel:
    """One sink with its queue, batching, retry and acknowledgements."""

    def __init__(
        self,
        sink: Sink,
        settings: SinkSettings,
        metrics: Metrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.name = settings.name
        self.settings = settings
        self.healthy = True
        self.health_detail = "ok"
        self._metrics = metrics
        self._sleep = sleep
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue(
            settings.queue_max_batches
        )
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._retries = metrics.counter(
            "bbaudit_sink_retries_total",
            "Sink send attempts retried.",
            ["sink", "error"],
        )
        self._depth = metrics.gauge(
            "bbaudit_sink_queue_depth", "Submissions waiting per sink.", ["sink"]
        )
        self._healthy_gauge = metrics.gauge(
            "bbaudit_sink_healthy", "1 while the sink accepts records.", ["sink"]
        )
        self._healthy_gauge.labels(self.name).set(1)

    def wants(self, record: Record) -> bool:
        """Whether this sink's routing takes the record."""
        kind = "alerts" if isinstance(record, Alert) else "events"
        return kind in self.settings.receives

    async def start(self) -> None:
        """Start the sender task; connection errors are retried inside it."""
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    async def submit(self, records: list[Record], ack: Ack) -> None:
        """Queue records; waits while the queue is full. ``ack`` runs once sent."""
        self._idle.clear()
        await self._queue.put(_Submission(records, ack))
        self._depth.labels(self.name).set(self._queue.qsize())

    async def drain(self) -> None:
        """Wait until everything submitted so far has been acknowledged."""
        while not self._queue.empty() or not self._idle.is_set():
            await self._idle.wait()
            if not self._queue.empty():
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Stop the sender (queued records stay unacknowledged) and close the sink."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.sink.aclose()

    async def _run(self) -> None:
        await self._connect()
        while True:
            batch = await self._next_batch()
            await self._deliver([r for s in batch for r in s.records])
            for submission in batch:
                submission.ack()
            self._count(batch)
            if self._queue.empty():
                self._idle.set()

    async def _connect(self) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(self.sink.start(), self.settings.send_timeout)
                return
            except (SinkError, TimeoutError, OSError) as exc:
                attempt += 1
                await self._back_off(exc, attempt)

    async def _next_batch(self) -> list[_Submission]:
        """Wait for one submission, then take more until a batch limit is hit."""
        batch = [await self._queue.get()]
        count = len(batch[0].records)
        deadline = time.monotonic() + self.settings.batch_max_wait
        while count < self.settings.batch_max_records:
            remaining = deadline - time.monotonic()
            if self._queue.empty() and remaining <= 0:
                break
            try:
                more = await asyncio.wait_for(self._queue.get(), max(remaining, 0))
            except TimeoutError:
                break
            batch.append(more)
            count += len(more.records)
        self._depth.labels(self.name).set(self._queue.qsize())
        return batch

    async def _deliver(self, records: list[Record]) -> None:
        """Send in chunks of at most ``batch_max_records``; retry until taken."""
        size = self.settings.batch_max_records
        for start in range(0, len(records), size):
            chunk = records[start : start + size]
            attempt = 0
            while True:
                try:
                    await asyncio.wait_for(
                        self.sink.send(chunk), self.settings.send_timeout
                    )
                    self._mark_healthy()
                    break
                except (SinkError, TimeoutError, OSError) as exc:
                    attempt += 1
                    await self._back_off(exc, attempt)

    async def _back_off(self, exc: BaseException, attempt: int) -> None:
        retriable = getattr(exc, "retriable", True)
        error = type(exc).__name__
        self._retries.labels(self.name, error).inc()
        cap = min(self.settings.retry_max, self.settings.retry_initial * 2**attempt)
        delay = random.uniform(0, cap)
        if not retriable or attempt >= 3:
            self._mark_unhealthy(f"{error}: {exc}")
        log.warning(
            "sink.send_retried",
            sink=self.name,
            attempt=attempt,
            delay_s=round(delay, 3),
            error=error,
            reason=str(exc)[:300],
            retriable=retriable,
        )
        await self._sleep(delay)

    def _mark_unhealthy(self, detail: str) -> None:
        if self.healthy:
            log.error("sink.unhealthy", sink=self.name, reason=detail[:300])
        self.healthy = False
        self.health_detail = detail[:300]
        self._healthy_gauge.labels(self.name).set(0)

    def _mark_healthy(self) -> None:
        if not self.healthy:
            log.info("sink.recovered", sink=self.name)
        self.healthy = True
        self.health_detail = "ok"
        self._healthy_gauge.labels(self.name).set(1)

    def _count(self, batch: list[_Submission]) -> None:
        events = sum(1 for s in batch for r in s.records if not isinstance(r, Alert))
        alerts = sum(len(s.records) for s in batch) - events
        written = self._metrics.records_written
        if events:
            written.labels(self.name, "event").inc(events)
        if alerts:
            written.labels(self.name, "alert").inc(alerts)

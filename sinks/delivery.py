"""Delivery: the machinery between the pipeline and one sink, written once.

A ``DeliveryChannel`` owns a bounded queue in front of its sink (a full queue
makes ``submit`` wait, which slows the sources instead of growing memory),
cuts queued work into batches by count, bytes and time (``sinks.batching``),
sends each batch with a timeout and retries it with full-jitter backoff
(``sinks.retry``).

A submission's ``ack`` runs once every record of it is *durable*: taken by the
sink, or written and fsynced to the disk spool (``sinks.spool``). A batch goes
to the spool after ``spool_after_attempts`` failed sends or ``spool_after``
seconds of failing, and at once on an error the sink calls not retriable.
While the spool holds anything, new batches are appended behind it (order is
kept) and the head is retried with backoff; once the sink takes the head, the
spool drains in order and the channel goes back to sending directly.

When the spool is full the channel logs ``sink.spool_full`` and stops taking
new batches, so ``submit`` waits (backpressure): nothing is dropped, and it
resumes as soon as a drained batch frees space. Without a spool directory
(or with ``spool_max_bytes: 0``) a failing sink is retried until it recovers.

One worker task does all of it, so sends and spool operations never overlap.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import orjson
import structlog

from collector.metrics import Metrics
from collector.model import Alert, Record
from collector.stages import Sink
from sinks.base import SinkSettings
from sinks.batching import Ack, Batch, Batcher, Submission
from sinks.render import render
from sinks.retry import Backoff
from sinks.spool import DiskSpool, SpoolFullError

log = structlog.get_logger(__name__)

T = TypeVar("T")
_SPOOL_IO_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 10.0
_SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

__all__ = ["Ack", "DeliveryChannel"]


class DeliveryChannel:
    """One sink with its queue, batching, retry, spool and acknowledgements.

    ``healthy`` is False while the sink is failing or the spool is full;
    ``health_detail`` says why. ``spool_records``/``spool_bytes`` give the
    spool depth.
    """

    def __init__(
        self,
        sink: Sink,
        settings: SinkSettings,
        metrics: Metrics,
        *,
        spool_dir: Path | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.name = settings.name
        self.settings = settings
        self.healthy = True
        self.health_detail = "ok"
        self._sleep = sleep
        self._queue: asyncio.Queue[Submission] = asyncio.Queue(
            settings.queue_max_batches
        )
        self._batcher = Batcher(
            self._queue,
            max_records=settings.batch_max_records,
            max_bytes=settings.batch_max_bytes,
            max_wait=settings.batch_max_wait,
        )
        self._spool_dir = spool_dir if settings.spool_max_bytes > 0 else None
        self._spool: DiskSpool | None = None
        self._held: Batch | None = None
        self._spool_full = False
        self._head_backoff = Backoff(settings.retry_initial, settings.retry_max)
        self._next_head_try = 0.0
        self._sink_started = False
        self._task: asyncio.Task[None] | None = None
        self._unacked = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._init_metrics(metrics)

    def _init_metrics(self, metrics: Metrics) -> None:
        self._written = metrics.records_written
        self._dropped = metrics.records_dropped
        self._retries = metrics.counter(
            "bbaudit_sink_retries_total",
            "Sink send attempts that failed and were retried, by error type.",
            ["sink", "error"],
        )
        self._spooled = metrics.counter(
            "bbaudit_sink_spooled_records_total",
            "Records written to the disk spool.",
            ["sink"],
        )
        self._send_seconds = metrics.histogram(
            "bbaudit_sink_send_seconds",
            "Duration of one batch send, successful or not.",
            ["sink"],
            buckets=_SEND_BUCKETS,
        )
        self._depth = metrics.gauge(
            "bbaudit_sink_queue_depth", "Submissions waiting per sink.", ["sink"]
        )
        self._spool_records_gauge = metrics.gauge(
            "bbaudit_sink_spool_records", "Records held in the disk spool.", ["sink"]
        )
        self._spool_bytes_gauge = metrics.gauge(
            "bbaudit_sink_spool_bytes",
            "Payload bytes held in the disk spool.",
            ["sink"],
        )
        self._healthy_gauge = metrics.gauge(
            "bbaudit_sink_healthy", "1 while the sink accepts records.", ["sink"]
        )
        self._healthy_gauge.labels(self.name).set(1)

    @property
    def spool_records(self) -> int:
        """Records waiting in the disk spool."""
        return self._spool.records if self._spool is not None else 0

    @property
    def spool_bytes(self) -> int:
        """Payload bytes waiting in the disk spool."""
        return self._spool.bytes if self._spool is not None else 0

    def wants(self, record: Record) -> bool:
        """Whether this sink's routing takes the record."""
        kind = "alerts" if isinstance(record, Alert) else "events"
        return kind in self.settings.receives

    async def start(self) -> None:
        """Open the spool and start the worker; the sink connects in the worker."""
        if self._spool_dir is not None and self._spool is None:
            self._spool = await asyncio.to_thread(
                DiskSpool,
                self._spool_dir,
                self.settings.spool_max_bytes,
                sink=self.name,
            )
            self._note_spool()
            if len(self._spool):
                log.info(
                    "sink.spool_resumed",
                    sink=self.name,
                    records=self._spool.records,
                    bytes=self._spool.bytes,
                )
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    async def submit(self, records: list[Record], ack: Ack) -> None:
        """Queue records; waits while the queue is full. ``ack`` runs once durable."""
        if not records:
            ack()
            return
        self._unacked += 1
        self._idle.clear()
        await self._queue.put(Submission(records, ack))
        self._depth.labels(self.name).set(self._queue.qsize())

    async def drain(self) -> None:
        """Wait until everything submitted so far is durable (sent or spooled)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Stop the worker (unacknowledged records stay so) and close the sink."""
        if self._task is not None:
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error("sink.worker_failed", sink=self.name, exc_info=True)
            self._task = None
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self.sink.aclose()
        except (TimeoutError, Exception) as exc:
            log.warning("sink.close_failed", sink=self.name, error=type(exc).__name__)
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    async def _run(self) -> None:
        errors = Backoff(self.settings.retry_initial, self.settings.retry_max)
        while True:
            try:
                await self._step()
                errors.reset()
            except Exception as exc:
                # A bug or an unexpected disk error must not kill the worker
                # silently: the pipeline would stall with nothing in the logs.
                delay = errors.failed()
                log.exception("sink.worker_error", sink=self.name, delay_s=delay)
                self._mark_unhealthy(exc)
                await self._sleep(delay)

    async def _step(self) -> None:
        spool = self._spool
        if spool is not None and not len(spool) and self._held is not None:
            # The spool drained while a batch waited for room in it (the disk
            # was full): send that batch straight to the sink instead.
            batch, self._held = self._held, None
            await self._deliver(batch)
            return
        if self._spool is not None and (len(self._spool) or self._held):
            await self._spool_cycle(self._spool)
        else:
            await self._deliver(await self._batcher.next_batch())

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch, retrying; spool it once the sink keeps failing."""
        backoff = Backoff(self.settings.retry_initial, self.settings.retry_max)
        while True:
            error = await self._send(batch.records)
            if error is None:
                self._complete(batch, delivered=True)
                return

            delay = backoff.failed()
            if self._should_spool(backoff, error):
                self._mark_unhealthy(error)
                if await self._put_in_spool(batch):
                    return
            self._log_retry(error, backoff.attempts, delay)
            await self._sleep(delay)

    def _should_spool(self, backoff: Backoff, error: BaseException) -> bool:
        if self._spool is None:
            if backoff.attempts >= self.settings.spool_after_attempts:
                self._mark_unhealthy(error)
            return False
        return (
            not getattr(error, "retriable", True)
            or backoff.attempts >= self.settings.spool_after_attempts
            or backoff.elapsed() >= self.settings.spool_after
        )

    async def _spool_cycle(self, spool: DiskSpool) -> None:
        """Append what is queued behind the spool, then retry or drain its head."""
        await self._absorb(spool)
        due = time.monotonic() >= self._next_head_try
        if due and await self._send_head(spool):
            return
        wait = max(self._next_head_try - time.monotonic(), 0.0)
        if self._held is not None:
            await self._sleep(wait)
        else:
            await self._batcher.wait_for_input(wait)

    async def _absorb(self, spool: DiskSpool) -> None:
        """Move queued batches into the spool until it is full."""
        while True:
            batch = self._held or self._batcher.next_batch_nowait()
            if batch is None:
                return
            self._held = None
            if not await self._put_in_spool(batch):
                self._held = batch
                return

    async def _send_head(self, spool: DiskSpool) -> bool:
        """Try the oldest spooled batch; True if it was delivered and removed."""
        head = await self._spool_io(spool.head)
        if head is None:
            return True
        error = await self._send(head.records)
        if error is not None:
            delay = self._head_backoff.failed()
            self._next_head_try = time.monotonic() + delay
            self._log_retry(error, self._head_backoff.attempts, delay, spooled=True)
            self._mark_unhealthy(error)
            return False

        await self._spool_io(lambda: spool.remove(head))
        self._head_backoff.reset()
        self._next_head_try = 0.0
        self._count_written(head.records)
        self._note_spool()
        if not len(spool):
            log.info("sink.spool_drained", sink=self.name)
        return True

    async def _put_in_spool(self, batch: Batch) -> bool:
        """Write the batch to the spool and acknowledge it; False if it is full."""
        assert self._spool is not None
        spool = self._spool
        try:
            await self._spool_io(lambda: spool.put(batch.records))
        except SpoolFullError as exc:
            self._report_full(str(exc))
            return False
        except (sqlite3.Error, OSError, TimeoutError) as exc:
            log.error("sink.spool_write_failed", sink=self.name, reason=str(exc)[:200])
            return False
        if self._spool_full:
            self._spool_full = False
            log.info(
                "sink.spool_space_freed", sink=self.name, spool_bytes=self.spool_bytes
            )
        self._spooled.labels(self.name).inc(len(batch.records))
        self._note_spool()
        self._complete(batch, delivered=False)
        return True

    def _report_full(self, reason: str) -> None:
        if self._spool_full:
            return
        self._spool_full = True
        log.error(
            "sink.spool_full",
            sink=self.name,
            spool_bytes=self.spool_bytes,
            spool_max_bytes=self.settings.spool_max_bytes,
            reason=reason,
        )
        self.healthy = False
        self.health_detail = f"spool full ({self.spool_bytes} bytes); holding input"
        self._healthy_gauge.labels(self.name).set(0)

    async def _spool_io(self, call: Callable[[], T]) -> T:
        async with asyncio.timeout(_SPOOL_IO_TIMEOUT_S):
            return await asyncio.to_thread(call)

    async def _send(self, records: list[Record]) -> BaseException | None:
        """One attempt (connecting first if needed); the error, or None if taken."""
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancel that lands as its timeout fires, and aclose() would hang.
            async with asyncio.timeout(self.settings.send_timeout):
                if not self._sink_started:
                    await self.sink.start()
                    self._sink_started = True
                await self.sink.send(records)
        except asyncio.CancelledError:
            raise
        # SinkError, TimeoutError and OSError are expected; anything else is a bug
        # in the sink, treated the same way (retried, then spooled) rather than
        # killing the worker and stalling the pipeline.
        except Exception as exc:
            self._retries.labels(self.name, type(exc).__name__).inc()
            if isinstance(exc, (TypeError, ValueError)) and self._drop_unrenderable(
                records
            ):
                return await self._send(records) if records else None
            return exc
        finally:
            self._send_seconds.labels(self.name).observe(time.perf_counter() - started)
        self._mark_healthy()
        return None

    def _drop_unrenderable(self, records: list[Record]) -> bool:
        """Remove records this sink's format cannot serialize; True if any.

        One such record (a value no JSON encoder takes) would otherwise fail
        its batch forever and stop the sink; it is logged with its id, counted
        and dropped, and the rest of the batch flows on.
        """
        fmt = self.settings.format if self.settings.format != "cef" else "ecs"
        bad: list[int] = []
        for index, record in enumerate(records):
            try:
                orjson.dumps(render(record, fmt))
            except (TypeError, ValueError) as exc:
                bad.append(index)
                log.error(
                    "sink.record_unrenderable",
                    sink=self.name,
                    record_id=record.id,
                    reason=str(exc)[:200],
                )
        for index in reversed(bad):
            del records[index]
        if bad:
            self._dropped.labels(self.name, "unrenderable").inc(len(bad))
        return bool(bad)

    def _complete(self, batch: Batch, *, delivered: bool) -> None:
        """Acknowledge every submission whose last record is in this batch."""
        if delivered:
            self._count_written(batch.records)
        for submission, count in batch.parts:
            submission.remaining -= count
            if submission.remaining == 0:
                submission.ack()
                self._unacked -= 1
        self._depth.labels(self.name).set(self._queue.qsize())
        if self._unacked == 0:
            self._idle.set()

    def _count_written(self, records: list[Record]) -> None:
        alerts = sum(1 for r in records if isinstance(r, Alert))
        if alerts:
            self._written.labels(self.name, "alert").inc(alerts)
        if len(records) > alerts:
            self._written.labels(self.name, "event").inc(len(records) - alerts)

    def _note_spool(self) -> None:
        self._spool_records_gauge.labels(self.name).set(self.spool_records)
        self._spool_bytes_gauge.labels(self.name).set(self.spool_bytes)

    def _log_retry(
        self, error: BaseException, attempt: int, delay: float, *, spooled: bool = False
    ) -> None:
        log.warning(
            "sink.send_retried",
            sink=self.name,
            attempt=attempt,
            delay_s=round(delay, 3),
            error=type(error).__name__,
            reason=str(error)[:300],
            retriable=getattr(error, "retriable", True),
            from_spool=spooled,
        )

    def _mark_unhealthy(self, error: BaseException) -> None:
        detail = f"{type(error).__name__}: {error}"[:300]
        if self.healthy:
            log.error("sink.unhealthy", sink=self.name, reason=detail)
        self.healthy = False
        self.health_detail = detail
        self._healthy_gauge.labels(self.name).set(0)

    def _mark_healthy(self) -> None:
        if not self.healthy:
            log.info("sink.recovered", sink=self.name)
        self.healthy = True
        self.health_detail = "ok"
        self._healthy_gauge.labels(self.name).set(1)

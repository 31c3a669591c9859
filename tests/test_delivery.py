"""The delivery channel: batching, retry, acks, backpressure and the disk spool."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from structlog.testing import capture_logs

from collector.errors import SinkUnavailableError
from collector.metrics import Metrics
from collector.model import Actor, AuditEvent, Record
from sinks.base import SinkSettings
from sinks.batching import estimate_size
from sinks.delivery import DeliveryChannel

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_events(start: int, count: int) -> list[Record]:
    """Audit events with ids ``start`` .. ``start+count-1``."""
    return [
        AuditEvent(
            id=f"ev-{i}",
            time=T0,
            platform="dc",
            instance="bb",
            source_kind="test",
            action="repo.cloned",
            category="repository",
            actor=Actor(name=f"user{i % 3}"),
            raw={"n": i},
        )
        for i in range(start, start + count)
    ]


class FakeSink:
    """A sink that records batches and can be told to fail or hang."""

    def __init__(self) -> None:
        self.name = "fake"
        self.batches: list[list[str]] = []
        self.failing = False
        self.hanging = False
        self.attempts = 0
        self.closed = False

    async def start(self) -> None:
        """Nothing to connect."""

    async def send(self, records: Sequence[Record]) -> None:
        """Take the batch, or fail or hang as told."""
        self.attempts += 1
        if self.hanging:
            await asyncio.Event().wait()
        if self.failing:
            raise SinkUnavailableError("receiver down", sink=self.name)
        self.batches.append([r.id for r in records])

    async def aclose(self) -> None:
        """Mark closed."""
        self.closed = True

    def ids(self) -> list[str]:
        """Every delivered id in delivery order."""
        return [i for batch in self.batches for i in batch]


def settings(**overrides: Any) -> SinkSettings:
    """Sink settings with fast timings for tests."""
    values: dict[str, Any] = {
        "kind": "fake",
        "name": "fake",
        "batch_max_wait": 0.01,
        "retry_initial": 0.005,
        "retry_max": 0.02,
        "send_timeout": 2.0,
        "spool_after_attempts": 2,
    }
    values.update(overrides)
    return SinkSettings(**values)


class Acks:
    """Collects acknowledgements in the order they arrive."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def for_(self, n: int) -> Any:
        """The ack callback of submission ``n``."""
        return lambda: self.order.append(n)


async def test_batches_cut_by_record_count() -> None:
    """One large submission is sent in batches of at most batch_max_records."""
    sink = FakeSink()
    channel = DeliveryChannel(sink, settings(batch_max_records=500), Metrics())
    acks = Acks()
    await channel.start()

    await channel.submit(make_events(0, 1200), acks.for_(0))
    await asyncio.wait_for(channel.drain(), 5)
    await channel.aclose()

    assert [len(b) for b in sink.batches] == [500, 500, 200]
    assert acks.order == [0]


async def test_batches_cut_by_bytes() -> None:
    """The byte limit closes a batch before the count limit does."""
    sink = FakeSink()
    channel = DeliveryChannel(sink, settings(batch_max_bytes=3000), Metrics())
    await channel.start()

    await channel.submit(make_events(0, 20), lambda: None)
    await asyncio.wait_for(channel.drain(), 5)
    await channel.aclose()

    assert len(sink.batches) > 1
    assert all(len(b) <= 5 for b in sink.batches)
    assert sink.ids() == [f"ev-{i}" for i in range(20)]


async def test_batches_merge_submissions_within_wait() -> None:
    """Submissions that arrive within batch_max_wait go out as one batch."""
    sink = FakeSink()
    channel = DeliveryChannel(sink, settings(batch_max_wait=0.3), Metrics())
    acks = Acks()
    await channel.start()

    for n in range(3):
        await channel.submit(make_events(n * 10, 10), acks.for_(n))
    await asyncio.wait_for(channel.drain(), 5)
    await channel.aclose()

    assert [len(b) for b in sink.batches] == [30]
    assert acks.order == [0, 1, 2]


async def test_retries_retriable_errors_with_jittered_sleep() -> None:
    """A failing send is retried after capped full-jitter sleeps, then acknowledged."""
    sink = FakeSink()
    sink.failing = True
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 3:
            sink.failing = False

    channel = DeliveryChannel(
        sink,
        settings(retry_initial=1.0, retry_max=3.0, spool_after_attempts=10),
        Metrics(),
        sleep=fake_sleep,
    )
    acks = Acks()
    await channel.start()

    await channel.submit(make_events(0, 5), acks.for_(0))
    await asyncio.wait_for(channel.drain(), 5)
    await channel.aclose()

    assert len(sleeps) == 3
    assert all(0 <= s <= c for s, c in zip(sleeps, [1.0, 2.0, 3.0], strict=True))
    assert sink.ids() == [f"ev-{i}" for i in range(5)]
    assert acks.order == [0]
    assert channel.healthy


async def test_acks_follow_submission_order() -> None:
    """Acknowledgements arrive in the order records were submitted."""
    sink = FakeSink()
    channel = DeliveryChannel(sink, settings(batch_max_records=7), Metrics())
    acks = Acks()
    await channel.start()

    for n in range(10):
        await channel.submit(make_events(n * 5, 5), acks.for_(n))
    await asyncio.wait_for(channel.drain(), 5)
    await channel.aclose()

    assert acks.order == list(range(10))
    assert sink.ids() == [f"ev-{i}" for i in range(50)]


async def test_full_queue_pushes_back_on_submit() -> None:
    """With the sink stuck and no spool, submit waits once the queue is full."""
    sink = FakeSink()
    sink.hanging = True
    channel = DeliveryChannel(
        sink, settings(queue_max_batches=2, send_timeout=30.0), Metrics()
    )
    await channel.start()

    for n in range(3):  # one in the worker's hands, two queued
        await asyncio.wait_for(channel.submit(make_events(n, 1), lambda: None), 1)
        await asyncio.sleep(0.05)
    blocked = asyncio.create_task(channel.submit(make_events(9, 1), lambda: None))
    await asyncio.sleep(0.2)

    assert not blocked.done()
    blocked.cancel()
    await channel.aclose()


async def test_send_timeout_counts_as_failure_and_spools(tmp_path: Path) -> None:
    """A send that hangs times out and the batch is spooled and acknowledged."""
    sink = FakeSink()
    sink.hanging = True
    channel = DeliveryChannel(
        sink, settings(send_timeout=0.05), Metrics(), spool_dir=tmp_path
    )
    acks = Acks()
    await channel.start()

    await channel.submit(make_events(0, 3), acks.for_(0))
    await asyncio.wait_for(channel.drain(), 5)

    assert acks.order == [0]
    assert channel.spool_records == 3
    assert not channel.healthy
    assert "TimeoutError" in channel.health_detail
    await channel.aclose()


async def test_spool_takes_over_and_drains_in_order(tmp_path: Path) -> None:
    """A down sink spools and acks; on recovery the spool drains first, in order."""
    sink = FakeSink()
    sink.failing = True
    channel = DeliveryChannel(sink, settings(), Metrics(), spool_dir=tmp_path)
    acks = Acks()
    await channel.start()

    for n in range(5):
        await channel.submit(make_events(n * 10, 10), acks.for_(n))
    await asyncio.wait_for(channel.drain(), 5)
    assert acks.order == list(range(5))
    assert channel.spool_records == 50
    assert not channel.healthy

    sink.failing = False
    for n in range(5, 8):
        await channel.submit(make_events(n * 10, 10), acks.for_(n))
    await _until(lambda: channel.spool_records == 0 and len(sink.ids()) == 80)
    await channel.aclose()

    assert sink.ids() == [f"ev-{i}" for i in range(80)]
    assert acks.order == list(range(8))
    assert channel.healthy


async def test_spool_survives_restart(tmp_path: Path) -> None:
    """Records spooled by one channel are delivered by the next one on that dir."""
    down = FakeSink()
    down.failing = True
    first = DeliveryChannel(down, settings(), Metrics(), spool_dir=tmp_path)
    await first.start()
    await first.submit(make_events(0, 25), lambda: None)
    await asyncio.wait_for(first.drain(), 5)
    await first.aclose()

    up = FakeSink()
    second = DeliveryChannel(up, settings(), Metrics(), spool_dir=tmp_path)
    await second.start()
    assert second.spool_records == 25
    await _until(lambda: second.spool_records == 0)
    await second.aclose()

    assert up.ids() == [f"ev-{i}" for i in range(25)]


async def test_spool_full_logs_holds_acks_and_recovers(tmp_path: Path) -> None:
    """A full spool logs sink.spool_full and stops acking; recovery loses nothing."""
    sink = FakeSink()
    sink.failing = True
    channel = DeliveryChannel(
        sink,
        settings(spool_max_bytes=1500, batch_max_records=5),
        Metrics(),
        spool_dir=tmp_path,
    )
    acks = Acks()
    await channel.start()

    with capture_logs() as logs:
        for n in range(6):
            await channel.submit(make_events(n * 5, 5), acks.for_(n))
        await asyncio.sleep(0.3)
    assert any(e["event"] == "sink.spool_full" for e in logs)
    assert len(acks.order) < 6
    assert channel.spool_bytes <= 1500
    assert not channel.healthy

    sink.failing = False
    await asyncio.wait_for(channel.drain(), 5)
    await _until(lambda: channel.spool_records == 0)
    await channel.aclose()

    assert acks.order == list(range(6))
    assert sink.ids() == [f"ev-{i}" for i in range(30)]


async def test_wants_routes_by_kind() -> None:
    """A channel that receives only alerts does not want audit events."""
    channel = DeliveryChannel(FakeSink(), settings(receives=["alerts"]), Metrics())

    assert not channel.wants(make_events(0, 1)[0])


async def _until(predicate: Any, seconds: float = 5.0) -> None:
    """Poll until ``predicate()`` is true or fail after ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_size_estimate_uses_the_source_size_and_else_serializes() -> None:
    """A record's size as read stands in for serializing ``raw``; without it
    (REST and Cloud pages) the estimate serializes, so both are close."""
    measured = make_events(0, 1)[0]
    assert isinstance(measured, AuditEvent)
    known = replace(measured, raw_size=len(orjson.dumps(measured.raw)))
    huge = replace(measured, raw_size=20_000)

    assert estimate_size(known) == estimate_size(measured)
    assert estimate_size(huge) - estimate_size(known) == 20_000 - known.raw_size

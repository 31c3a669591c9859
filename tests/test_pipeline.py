"""The pipeline: dedupe, ordered checkpoint commits after acks, backpressure, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from collector.acks import AckTracker
from collector.config import PipelineSettings
from collector.errors import SinkUnavailableError
from collector.metrics import Metrics
from collector.model import AuditEvent, Record
from collector.pipeline import Pipeline
from collector.stages import SourceBatch
from collector.state import StateStore
from sinks.base import SinkSettings
from sinks.delivery import DeliveryChannel

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        id=f"e{n}",
        time=T0 + timedelta(seconds=n),
        platform="dc",
        instance="dc",
        source_kind="test",
        action="auth.login",
        category="authentication",
    )


class ListSource:
    """Yields fixed batches of event numbers, each with checkpoint = last number."""

    kind = "list"

    def __init__(self, name: str, batches: list[list[int]]) -> None:
        self.name = name
        self._batches = batches
        self.started_from: list[Any] = []

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        self.started_from.append(checkpoint)
        for numbers in self._batches:
            if checkpoint is not None and numbers and numbers[-1] <= checkpoint:
                continue
            yield SourceBatch(self.name, [_event(n) for n in numbers], numbers[-1])
        yield SourceBatch(self.name, [], caught_up=True)

    async def aclose(self) -> None:
        return None


class RecordingSink:
    """Keeps what it received; fails the first ``failures`` sends."""

    def __init__(self, name: str = "mem", failures: int = 0) -> None:
        self.name = name
        self.received: list[str] = []
        self.failures = failures

    async def start(self) -> None:
        return None

    async def send(self, records: Sequence[Record]) -> None:
        if self.failures:
            self.failures -= 1
            raise SinkUnavailableError("down", sink=self.name)
        self.received.extend(r.id for r in records)

    async def aclose(self) -> None:
        return None


async def _no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


def _channel(sink: RecordingSink, metrics: Metrics) -> DeliveryChannel:
    settings = SinkSettings(kind="mem", name=sink.name, batch_max_wait=0.0)
    return DeliveryChannel(sink, settings, metrics, sleep=_no_sleep)


def _pipeline(
    store: StateStore,
    source: ListSource,
    sinks: list[RecordingSink],
    settings: PipelineSettings | None = None,
) -> Pipeline:
    metrics = Metrics()
    return Pipeline(
        sources=[source],
        channels=[_channel(s, metrics) for s in sinks],
        store=store,
        metrics=metrics,
        settings=settings or PipelineSettings(),
    )


async def test_events_flow_and_checkpoint_commits(tmp_path: Path) -> None:
    """Every event reaches the sink and the last checkpoint is committed."""
    store = StateStore.in_dir(tmp_path)
    sink = RecordingSink()
    source = ListSource("s", [[1, 2], [3, 4], [5]])

    stats = await _pipeline(store, source, [sink]).run(follow=False)

    assert sink.received == ["e1", "e2", "e3", "e4", "e5"]
    assert store.load_checkpoint("s") == 5
    assert stats.new == 5
    assert "s" in stats.caught_up


async def test_overlap_is_deduplicated_across_runs(tmp_path: Path) -> None:
    """Events re-read after a restart are dropped by the persisted dedupe set."""
    store = StateStore.in_dir(tmp_path)
    first = RecordingSink()
    await _pipeline(store, ListSource("s", [[1, 2, 3]]), [first]).run(follow=False)

    second = RecordingSink()
    overlap = ListSource("s", [[2, 3, 4]])
    overlap_pipeline = _pipeline(store, overlap, [second])
    overlap_pipeline_stats = await overlap_pipeline.run(follow=False)

    assert second.received == ["e4"]
    assert overlap_pipeline_stats.deduped == 2


async def test_duplicates_inside_a_batch_are_dropped(tmp_path: Path) -> None:
    """The same id twice in one read is delivered once."""
    store = StateStore.in_dir(tmp_path)
    sink = RecordingSink()

    await _pipeline(store, ListSource("s", [[1, 1, 2]]), [sink]).run(follow=False)

    assert sink.received == ["e1", "e2"]


async def test_failing_sink_is_retried_until_it_takes_the_batch(tmp_path: Path) -> None:
    """A sink that fails a few times still ends up with every event once."""
    store = StateStore.in_dir(tmp_path)
    sink = RecordingSink(failures=3)

    await _pipeline(store, ListSource("s", [[1, 2], [3]]), [sink]).run(follow=False)

    assert sink.received == ["e1", "e2", "e3"]
    assert store.load_checkpoint("s") == 3


async def test_checkpoint_waits_for_every_sink(tmp_path: Path) -> None:
    """With one sink down, the checkpoint does not move and nothing is marked seen."""
    store = StateStore.in_dir(tmp_path)
    healthy = RecordingSink("a")
    down = RecordingSink("b", failures=10**9)
    source = ListSource("s", [[1, 2]])
    settings = PipelineSettings(drain_timeout=0.5)
    pipeline = _pipeline(store, source, [healthy, down], settings)

    await pipeline.run(follow=False)

    assert healthy.received == ["e1", "e2"]
    assert store.load_checkpoint("s") is None
    assert store.unseen(["e1", "e2"]) == {"e1", "e2"}


def test_ack_tracker_commits_in_read_order(tmp_path: Path) -> None:
    """A later batch acknowledged first waits for the earlier one to commit."""
    store = StateStore.in_dir(tmp_path)
    tracker = AckTracker(store)
    first = tracker.open("s", {"pos": 1}, ["a"], waiting=1)
    second = tracker.open("s", {"pos": 2}, ["b"], waiting=1)

    tracker.ack("s", second)
    before = store.load_checkpoint("s")
    tracker.ack("s", first)

    assert before is None
    assert store.load_checkpoint("s") == {"pos": 2}
    assert store.unseen(["a", "b"]) == set()


async def test_stop_drains_and_returns(tmp_path: Path) -> None:
    """stop() on a following pipeline drains in-flight work and returns."""
    store = StateStore.in_dir(tmp_path)
    sink = RecordingSink()
    pipeline = _pipeline(store, ListSource("s", [[1], [2]]), [sink])

    task = asyncio.create_task(pipeline.run(follow=True))
    for _ in range(200):
        if len(sink.received) == 2:
            break
        await asyncio.sleep(0.01)
    pipeline.stop()
    await asyncio.wait_for(task, 5)

    assert sink.received == ["e1", "e2"]
    assert store.load_checkpoint("s") == 2


@pytest.mark.parametrize("queue_batches", [1, 4])
async def test_bounded_queues_still_deliver_everything(
    tmp_path: Path, queue_batches: int
) -> None:
    """Small queues slow the source down but lose nothing."""
    store = StateStore.in_dir(tmp_path)
    sink = RecordingSink()
    batches = [[n] for n in range(1, 101)]
    settings = PipelineSettings(queue_batches=queue_batches)
    pipeline = _pipeline(store, ListSource("s", batches), [sink], settings)

    await pipeline.run(follow=False)

    assert len(sink.received) == 100
    assert store.load_checkpoint("s") == 100


def test_readiness_reports_a_source_whose_credentials_are_rejected(
    tmp_path: Path,
) -> None:
    """A source with a problem (rejected credentials) makes /readyz say not ready."""
    from collector.app import readiness

    store = StateStore.in_dir(tmp_path)
    source = ListSource("s", [])
    pipeline = _pipeline(store, source, [RecordingSink()])

    ready_before, _ = readiness(pipeline)
    source.problem = "credentials rejected (HTTP 401)"  # type: ignore[attr-defined]
    ready_after, reasons = readiness(pipeline)

    assert ready_before is True
    assert ready_after is False
    assert reasons["sources"]["s"]["problem"] == "credentials rejected (HTTP 401)"


def _spooling_pipeline(
    tmp_path: Path, sink: RecordingSink, drain_timeout: float
) -> tuple[Pipeline, StateStore]:
    store = StateStore.in_dir(tmp_path / "state")
    metrics = Metrics()
    settings = SinkSettings(
        kind="mem",
        name=sink.name,
        batch_max_wait=0.0,
        retry_initial=0.01,
        retry_max=0.05,
        spool_after_attempts=1,
    )
    channel = DeliveryChannel(sink, settings, metrics, spool_dir=tmp_path / "spool")
    pipeline = Pipeline(
        sources=[ListSource("s", [[1, 2], [3]])],
        channels=[channel],
        store=store,
        metrics=metrics,
        settings=PipelineSettings(drain_timeout=drain_timeout),
    )
    return pipeline, store


async def test_run_once_waits_for_the_spool_to_drain(tmp_path: Path) -> None:
    """A one-off run does not finish while a recovering sink's spool holds records."""
    sink = RecordingSink(failures=3)
    pipeline, store = _spooling_pipeline(tmp_path, sink, drain_timeout=10)

    stats = await pipeline.run(follow=False)
    store.close()

    assert sorted(sink.received) == ["e1", "e2", "e3"]
    assert stats.spooled_left == {}


async def test_run_once_reports_what_a_dead_sink_left_in_its_spool(
    tmp_path: Path,
) -> None:
    """With the sink still down at the drain timeout, the spool count is reported."""
    sink = RecordingSink(failures=10**9)
    pipeline, store = _spooling_pipeline(tmp_path, sink, drain_timeout=1)

    with capture_logs() as logs:
        stats = await pipeline.run(follow=False)
    store.close()

    assert sink.received == []
    assert stats.spooled_left == {"mem": 3}
    left = [e for e in logs if e["event"] == "sink.spool_left"]
    assert left and left[0]["records"] == 3

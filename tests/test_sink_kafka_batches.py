"""Adversarial checks of the Kafka sink's record-batch path (create_batch and
send_batch per topic partition) and of the source's raw size hint, against a
real tansu broker where one is needed."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder

from collector.errors import SinkUnavailableError
from collector.metrics import Metrics
from collector.model import Alert, AuditEvent, Record
from sinks.codec import decode_record, encode_record
from sinks.delivery import DeliveryChannel
from sinks.kafka import KafkaSink, KafkaSinkSettings
from tests.kafka_broker import TansuBroker, free_port, kafka_broker, tansu_binary
from tests.kafka_messages import (
    T0,
    assert_ordered_per_key,
    consume,
    make_events,
    sink_settings,
)

__all__ = ["kafka_broker"]


def events(prefix: str, start: int, count: int) -> list[Record]:
    """Events by five users; every third is 3 kB, the rest small, so with a
    1 kB batch size some exceed a whole record batch."""
    return make_events(
        start, count, prefix, actors=5, note_size=lambda i: 3000 if i % 3 == 0 else 50
    )


def settings_for(broker: TansuBroker, **overrides: Any) -> KafkaSinkSettings:
    """The shared test settings, uncompressed, keeping the original (the checks
    read each record's ``seq``) and with short deadlines."""
    values: dict[str, Any] = {
        "compression": "none",
        "linger_ms": 2,
        "include_original": True,
        "request_timeout": 5.0,
        "close_timeout": 2.0,
    }
    return sink_settings(broker, **{**values, **overrides})


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[str]]:
    """Messages the event loop's exception handler got (e.g. a future whose
    exception nobody retrieved), collected until the test ends."""
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context["message"]))
    yield errors
    loop.set_exception_handler(previous)


def test_fresh_record_batch_takes_a_record_above_its_size() -> None:
    """A fresh aiokafka batch accepts one record larger than the batch size, and
    only a non-empty one refuses: the sink's second append never loses one."""
    batch = BatchBuilder(1024, 0)

    first = batch.append(timestamp=None, key=b"k", value=b"x" * 5000, headers=[])
    second = batch.append(timestamp=None, key=b"k", value=b"y", headers=[])

    assert first is not None
    assert second is None
    assert batch.record_count() == 1


async def test_records_above_batch_size_arrive_once_in_key_order(
    kafka_broker: TansuBroker,
) -> None:
    """With a 1 kB batch size each partition's records span many record batches
    (some a single record larger than a batch); three sends in a row still
    deliver each record exactly once, every key in submission order."""
    topic = "bbaudit.kb.order"
    settings = settings_for(kafka_broker, events_topic=topic, max_batch_size=1024)
    sink = KafkaSink(settings)
    records = events("ord", 0, 240)

    await sink.start()
    for start in range(0, 240, 80):
        await sink.send(records[start : start + 80])
    await sink.aclose()
    seen = await consume(kafka_broker, topic, 240, idle_s=2.0)

    assert sorted(s[2] for s in seen) == sorted(r.id for r in records)
    assert len({s[0] for s in seen}) == 5
    assert_ordered_per_key(seen)


async def test_topics_used_for_the_first_time_get_events_and_alerts(
    kafka_broker: TansuBroker,
) -> None:
    """One send to an events topic and an alerts topic that do not exist yet
    waits for their metadata (the broker creates them) and delivers both."""
    settings = settings_for(
        kafka_broker, events_topic="bbaudit.kb.new-ev", alerts_topic="bbaudit.kb.new-al"
    )
    sink = KafkaSink(settings)
    alert = Alert(
        id="kb-alert-1",
        rule_id="mass_clone",
        rule_name="Mass clone",
        severity="high",
        risk_score=70,
        time=T0,
        summary="user1 cloned many repositories",
        key="user1",
        evidence=("e1",),
        actor="user1",
    )

    await sink.send([*events("new", 0, 10), alert])
    await sink.aclose()
    seen_events = await consume(kafka_broker, "bbaudit.kb.new-ev", 10, idle_s=2.0)
    seen_alerts = await consume(kafka_broker, "bbaudit.kb.new-al", 1, idle_s=2.0)

    assert sorted(s[2] for s in seen_events) == [f"new-{i:07d}" for i in range(10)]
    assert [(s[0], s[2]) for s in seen_alerts] == [(b"user1", "kb-alert-1")]


async def test_broker_frozen_or_down_fails_in_time_and_next_send_recovers(
    tmp_path: Path,
) -> None:
    """A send to a broker that stopped answering (SIGSTOP) and one to a broker
    that is gone each raise a retriable SinkError within the deadline; once the
    broker is back the next send delivers."""
    binary = tansu_binary()
    assert binary is not None, "run tests/infra/install_kafka.sh"
    broker = TansuBroker(binary, free_port(), tmp_path / "tansu.log")
    await broker.astart()
    settings = settings_for(broker, request_timeout=2.0, close_timeout=1.0)
    sink = KafkaSink(settings)
    try:
        await sink.send(events("up", 0, 20))
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(SinkUnavailableError) as frozen:
            await asyncio.wait_for(sink.send(events("frozen", 0, 2000)), 15)
        frozen_s = time.monotonic() - started
        os.kill(broker.process.pid, signal.SIGCONT)
        await asyncio.to_thread(broker.stop)
        started = time.monotonic()
        with pytest.raises(SinkUnavailableError) as down:
            await asyncio.wait_for(sink.send(events("down", 0, 20)), 15)
        down_s = time.monotonic() - started

        await broker.astart()
        await asyncio.wait_for(sink.send(events("back", 0, 20)), 15)
        await sink.aclose()
        seen = await consume(broker, "bbaudit.events", 20, idle_s=2.0)
    finally:
        await sink.aclose()
        broker.stop()

    assert frozen.value.retriable and down.value.retriable
    assert frozen_s < 2.0 + 1.0 + 1.5
    assert down_s < 2.0 + 1.0 + 1.5
    assert sorted(s[2] for s in seen) == [f"back-{i:07d}" for i in range(20)]


async def test_timed_out_send_leaves_no_unretrieved_batch_error(
    tmp_path: Path, loop_errors: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """After a send times out against a broker that stopped answering, the
    batches that later fail leave no 'exception was never retrieved' behind."""
    # A captured aiokafka warning keeps its error, whose frames keep the
    # failed batches alive past the test; below ERROR none is recorded.
    caplog.set_level(logging.ERROR, logger="aiokafka")
    binary = tansu_binary()
    assert binary is not None, "run tests/infra/install_kafka.sh"
    broker = TansuBroker(binary, free_port(), tmp_path / "tansu.log")
    await broker.astart()
    sink = KafkaSink(settings_for(broker, request_timeout=2.0, close_timeout=1.0))
    try:
        await sink.send(events("up", 0, 20))
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        error = await send_error(sink, events("frozen", 0, 200))
        await asyncio.sleep(1.5)  # the produce request times out meanwhile
        gc.collect()
        os.kill(broker.process.pid, signal.SIGCONT)
    finally:
        await sink.aclose()
        broker.stop()

    assert error == "SinkUnavailableError"
    assert loop_errors == []


async def send_error(sink: KafkaSink, records: list[Record]) -> str:
    """The name of the error ``send`` raised, or "" (the error and its frames
    are dropped here, so what they held can be collected)."""
    try:
        await asyncio.wait_for(sink.send(records), 15)
    except SinkUnavailableError as exc:
        return type(exc).__name__
    return ""


async def test_idempotent_producer_without_broker_support_fails_in_time(
    kafka_broker: TansuBroker,
) -> None:
    """With the default enable_idempotence on a broker that cannot give a
    producer id, the send fails as retriable instead of hanging."""
    settings = settings_for(kafka_broker, enable_idempotence=True, request_timeout=3.0)
    sink = KafkaSink(settings)

    with pytest.raises(SinkUnavailableError):
        await asyncio.wait_for(sink.send(events("idem", 0, 3)), 15)
    await sink.aclose()


async def test_oversize_record_does_not_hold_back_the_rest(tmp_path: Path) -> None:
    """One record above max_request_size is refused alone: the other records of
    its batch and every later batch still reach the broker."""
    binary = tansu_binary()
    assert binary is not None, "run tests/infra/install_kafka.sh"
    broker = TansuBroker(binary, free_port(), tmp_path / "tansu.log")
    await broker.astart()
    settings = settings_for(
        broker,
        events_topic="bbaudit.kb.oversize",
        max_request_size=8192,
        batch_max_records=10,
        batch_max_wait=0.05,
        retry_initial=0.1,
        retry_max=0.3,
        spool_after_attempts=1,
    )
    channel = DeliveryChannel(
        KafkaSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )
    records = [r for r in events("big", 0, 20) if isinstance(r, AuditEvent)]
    records[4] = dataclasses.replace(records[4], raw={"seq": 4, "note": "x" * 20_000})
    await channel.start()
    try:
        await channel.submit(list(records[:10]), lambda: None)
        await channel.submit(list(records[10:]), lambda: None)
        await asyncio.sleep(3.0)
        seen = await consume(broker, "bbaudit.kb.oversize", 19, idle_s=2.0)
    finally:
        await asyncio.wait_for(channel.aclose(), 15)
        broker.stop()

    assert sorted(s[2] for s in seen) == sorted(
        r.id for r in records if r.id != "big-0000004"
    )


def test_spooled_event_keeps_its_raw_size() -> None:
    """The spool's encoding carries ``raw_size``, so a spooled event is batched
    with the same size estimate after a restart."""
    event = events("spool", 0, 1)[0]
    assert isinstance(event, AuditEvent)
    sized = dataclasses.replace(event, raw_size=4321)

    back = decode_record(encode_record(sized))

    assert isinstance(back, AuditEvent)
    assert back.raw_size == 4321
    assert back == sized

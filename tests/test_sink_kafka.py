"""The Kafka sink through a delivery channel, against a real tansu broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from structlog.testing import capture_logs

from collector.errors import SinkUnavailableError
from collector.metrics import Metrics
from collector.model import Alert, AuditEvent, Record
from collector.plugins import Runtime
from collector.state import StateStore
from sinks.delivery import DeliveryChannel
from sinks.kafka import KafkaSink, KafkaSinkSettings, producer_options
from tests.kafka_broker import TansuBroker, free_port, kafka_broker, tansu_binary
from tests.kafka_messages import (
    ACTORS,
    T0,
    assert_ordered_per_key,
    consume,
    make_events,
    sink_settings,
)

__all__ = ["kafka_broker"]


async def submit_all(channel: DeliveryChannel, records: list[Record]) -> list[int]:
    """Submit in pipeline-sized chunks; returns the list acks append to."""
    acked: list[int] = []
    for n, start in enumerate(range(0, len(records), 500)):
        chunk = records[start : start + 500]
        await channel.submit(chunk, lambda n=n: acked.append(n))  # type: ignore[misc]
    return acked


@pytest.mark.slow
async def test_100k_events_arrive_exactly_once_keyed_by_actor(
    kafka_broker: TansuBroker,
) -> None:
    """100k events through the channel come back once each, keyed and ordered."""
    settings = sink_settings(kafka_broker, include_original=True)
    channel = DeliveryChannel(KafkaSink(settings), settings, Metrics())
    records = make_events(0, 100_000, "bulk")
    await channel.start()

    acked = await submit_all(channel, records)
    await asyncio.wait_for(channel.drain(), 90)
    await channel.aclose()
    seen = await consume(kafka_broker, "bbaudit.events", 100_000)

    assert acked == list(range(200))
    ids = [s[2] for s in seen if s[2].startswith("bulk-")]
    assert sorted(ids) == sorted(r.id for r in records)
    assert {s[0] for s in seen if s[2].startswith("bulk-")} == {
        f"user{i}".encode() for i in range(ACTORS)
    }
    assert_ordered_per_key([s for s in seen if s[2].startswith("bulk-")])


async def test_alerts_go_to_alerts_topic_keyed_by_actor(
    kafka_broker: TansuBroker,
) -> None:
    """An alert lands on the alerts topic with the actor as key and its id header."""
    settings = sink_settings(kafka_broker)
    sink = KafkaSink(settings)
    alert = Alert(
        id="alert-kafka-1",
        rule_id="mass_clone",
        rule_name="Mass clone",
        severity="high",
        risk_score=73,
        time=T0,
        summary="alice cloned 120 repositories",
        key="alice",
        evidence=("e1", "e2"),
        techniques=("T1213.003",),
        actor="alice",
    )

    await sink.start()
    await sink.send([alert])
    await sink.aclose()
    consumer = AIOKafkaConsumer(
        "bbaudit.alerts",
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
    )
    await asyncio.wait_for(consumer.start(), 30)
    try:
        batches = await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 30)
    finally:
        await consumer.stop()
    messages = [m for ms in batches.values() for m in ms]

    assert [m.key for m in messages] == [b"alice"]
    assert dict(messages[0].headers)["bbaudit-id"] == b"alert-kafka-1"
    assert orjson.loads(messages[0].value)["rule"]["id"] == "mass_clone"


async def test_unreachable_broker_raises_retriable_error() -> None:
    """Sending with no broker raises SinkUnavailableError within the deadline."""
    settings = KafkaSinkSettings(
        kind="kafka",
        name="kafka",
        bootstrap_servers=[f"127.0.0.1:{free_port()}"],
        enable_idempotence=False,
        request_timeout=2.0,
    )
    sink = KafkaSink(settings)

    with pytest.raises(SinkUnavailableError) as caught:
        await asyncio.wait_for(sink.send(make_events(0, 1, "x")), 10)
    await sink.aclose()

    assert caught.value.retriable


def test_send_timeout_leaves_room_for_the_sinks_own_deadlines() -> None:
    """Unless set, the channel's deadline covers a connect, a send and a producer
    reset; one that would cancel first is refused with the reason."""
    base: dict[str, Any] = {
        "kind": "kafka",
        "name": "kafka",
        "bootstrap_servers": ["127.0.0.1:9092"],
    }

    settings = KafkaSinkSettings.model_validate(
        {**base, "request_timeout": "20s", "close_timeout": "5s"}
    )

    assert settings.send_timeout == 2 * 20 + 5 + 5
    with pytest.raises(ValueError, match="send_timeout must be longer"):
        KafkaSinkSettings(**base, send_timeout=30)


def test_producer_options_defaults_are_safe() -> None:
    """acks=all, idempotence on, and TLS verification on by default."""
    settings = KafkaSinkSettings(
        kind="kafka", name="k", bootstrap_servers=["b:9093"], tls=True
    )

    options = producer_options(settings)

    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].check_hostname is True


@pytest.mark.slow
async def test_broker_outage_spools_and_loses_nothing(tmp_path: Path) -> None:
    """With the broker stopped for 30 s mid-stream, every event still arrives."""
    binary = tansu_binary()
    assert binary is not None, "run tests/infra/install_kafka.sh"
    broker = TansuBroker(binary, free_port(), tmp_path / "tansu.log")
    await broker.astart()
    settings = sink_settings(
        broker,
        include_original=True,
        request_timeout=3.0,
        close_timeout=2.0,
        send_timeout=6.0,
        retry_initial=0.2,
        retry_max=1.0,
        spool_after_attempts=2,
        spool_after=5.0,
    )
    channel = DeliveryChannel(
        KafkaSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )
    await channel.start()
    try:
        before = make_events(0, 30_000, "out")
        await submit_all(channel, before)
        await asyncio.wait_for(channel.drain(), 30)
        # tansu keeps data only in memory: read phase one before stopping it.
        seen = await consume(broker, "bbaudit.events", 30_000)

        broker.stop()
        stopped = time.monotonic()
        during = make_events(30_000, 40_000, "out")
        await submit_all(channel, during)
        await asyncio.wait_for(channel.drain(), 25)
        assert channel.spool_records > 0
        assert not channel.healthy
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))

        await broker.astart()
        after = make_events(70_000, 30_000, "out")
        await submit_all(channel, after)
        await asyncio.wait_for(channel.drain(), 30)
        for _ in range(300):
            if channel.spool_records == 0:
                break
            await asyncio.sleep(0.1)
        # The restarted broker may auto-create the topic (with its own partition
        # count) before our admin client does, so keys are checked per epoch.
        seen_after = await consume(broker, "bbaudit.events", 70_000)
        left = channel.spool_records
    finally:
        await channel.aclose()
        broker.stop()

    assert left == 0
    assert {s[2] for s in seen + seen_after} == {f"out-{i:07d}" for i in range(100_000)}
    assert_ordered_per_key(seen)
    assert_ordered_per_key(seen_after)


async def test_keys_land_where_the_default_partitioner_puts_them(
    kafka_broker: TansuBroker,
) -> None:
    """Full record batches are cut and sent in order, and each actor's partition
    is the one aiokafka's ``send`` (and the Java client) would pick, so other
    producers keyed by actor agree with ours."""
    settings = sink_settings(
        kafka_broker,
        include_original=True,
        max_batch_size=8 * 1024,
        events_topic="bbaudit.partitioned",
    )
    sink = KafkaSink(settings)
    records = make_events(0, 600, "part")

    await sink.start()
    await sink.send(records[:300])
    await sink.send(records[300:])
    partitions = sorted(await producer_partitions(sink, "bbaudit.partitioned"))
    await sink.aclose()
    seen = [
        s
        for s in await consume(kafka_broker, "bbaudit.partitioned", 600)
        if s[2].startswith("part-")
    ]

    assert sorted(s[2] for s in seen) == sorted(r.id for r in records)
    assert len(partitions) > 1  # else the check below proves nothing
    for key, partition, _, _ in seen:
        assert partition == DefaultPartitioner()(key, partitions, partitions)
    assert_ordered_per_key(seen)


async def producer_partitions(sink: KafkaSink, topic: str) -> set[int]:
    """The partitions the sink's producer knows for ``topic``."""
    producer = sink._producer  # the test reads what the sink sees
    assert producer is not None
    return set(await producer.partitions_for(topic))


async def test_record_above_max_request_size_is_dropped_logged_and_counted(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    """A record the broker would refuse can never be delivered: it is dropped
    with its id logged and counted, and the rest of its batch is sent."""
    settings = sink_settings(
        kafka_broker,
        max_request_size=2048,
        include_original=True,
        events_topic="bbaudit.oversize",
    )
    metrics = Metrics()
    store = StateStore.in_dir(tmp_path)
    sink = KafkaSink(
        settings, Runtime(state_dir=tmp_path, store=store, metrics=metrics)
    )
    small = make_events(0, 3, "fits")
    record = make_events(0, 1, "big")[0]
    big = AuditEvent(**{**_fields(record), "raw": {"seq": 0, "note": "x" * 4000}})

    await sink.start()
    with capture_logs() as logs:
        await sink.send([small[0], big, *small[1:]])
    await sink.aclose()
    store.close()
    seen = await consume(kafka_broker, "bbaudit.oversize", 3)

    assert sorted(s[2] for s in seen) == [r.id for r in small]
    dropped = [e for e in logs if e["event"] == "kafka.record_dropped"]
    assert [(e["record_id"], e["reason"]) for e in dropped] == [(big.id, "too_large")]
    assert sink.dropped == 1
    counted = metrics.registry.get_sample_value(
        "bbaudit_sink_records_dropped_total", {"sink": "kafka", "reason": "too_large"}
    )
    assert counted == 1


def _fields(event: Record) -> dict[str, Any]:
    assert isinstance(event, AuditEvent)
    return {name: getattr(event, name) for name in AuditEvent.__dataclass_fields__}

"""What the Kafka sink tests share: events to send, sink settings for the test
broker, and reading back what reached a topic (key, partition, record id, raw
``seq``)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from collector.model import Actor, AuditEvent, Record
from sinks.kafka import KafkaSinkSettings
from tests.kafka_broker import TansuBroker

Seen = tuple[bytes, int, str, int]
"""(key, partition, bbaudit-id header, raw ``seq`` or -1 without an original)."""


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACTORS = 37


def make_events(
    start: int,
    count: int,
    prefix: str,
    *,
    actors: int = ACTORS,
    note_size: Callable[[int], int] = lambda i: 200,
) -> list[Record]:
    """Audit events whose raw ``seq`` gives their submission order, by
    ``actors`` users, with a raw note of ``note_size(seq)`` bytes."""
    return [
        AuditEvent(
            id=f"{prefix}-{i:07d}",
            time=T0,
            platform="dc",
            instance="bb",
            source_kind="test",
            action="repo.cloned",
            category="repository",
            outcome="success",
            actor=Actor(name=f"user{i % actors}", kind="human"),
            source_ip="10.0.0.1",
            raw={"seq": i, "note": "x" * note_size(i)},
        )
        for i in range(start, start + count)
    ]


def sink_settings(broker: TansuBroker, **overrides: Any) -> KafkaSinkSettings:
    """Kafka sink settings for the test broker (no idempotence: tansu lacks it)."""
    values: dict[str, Any] = {
        "kind": "kafka",
        "name": "kafka",
        "bootstrap_servers": [broker.bootstrap],
        "enable_idempotence": False,
        "compression": "lz4",
        "linger_ms": 5,
        "batch_max_records": 2000,
        "batch_max_wait": 0.05,
        "queue_max_batches": 8,
    }
    values.update(overrides)
    return KafkaSinkSettings(**values)


async def consume(
    broker: TansuBroker, topic: str, expected: int, idle_s: float = 5.0
) -> list[Seen]:
    """Every message of ``topic`` in partition offset order, until ``expected``
    arrived or nothing came for ``idle_s``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=10_000,
    )
    # aiokafka's start() can wait forever on a broker that never answers.
    await asyncio.wait_for(consumer.start(), 30)
    seen: list[Seen] = []
    last = time.monotonic()
    try:
        while len(seen) < expected and time.monotonic() - last < idle_s:
            batches = await asyncio.wait_for(
                consumer.getmany(timeout_ms=500, max_records=10_000), 30
            )
            for partition, messages in batches.items():
                for m in messages:
                    assert m.key is not None and m.value is not None
                    record_id, seq = _id_and_seq(m.value, m.headers)
                    seen.append((m.key, partition.partition, record_id, seq))
                    last = time.monotonic()
    finally:
        await asyncio.wait_for(consumer.stop(), 30)
    return seen


def _id_and_seq(value: bytes, headers: Any) -> tuple[str, int]:
    document = orjson.loads(value)
    record_id = dict(headers)["bbaudit-id"].decode()
    original = document.get("event", {}).get("original")
    seq = orjson.loads(original).get("seq", -1) if original else -1
    return record_id, seq


def assert_ordered_per_key(seen: list[Seen]) -> None:
    """Each key's messages sit on one partition in submission order."""
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for key, partition, _, seq in seen:
        by_key[key].append(seq)
        partitions[key].add(partition)
    assert all(len(p) == 1 for p in partitions.values())
    for seqs in by_key.values():
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts)

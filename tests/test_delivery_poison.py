"""A record that no sink can serialize is dropped with a log line and a count;
it never blocks the records behind it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.model import AuditEvent
from sinks.delivery import DeliveryChannel
from sinks.file import FileSink, FileSinkSettings


def _event(n: int, context: dict[str, object] | None = None) -> AuditEvent:
    return AuditEvent(
        id=f"e{n}",
        time=datetime(2026, 3, 2, tzinfo=UTC),
        platform="dc",
        instance="dc",
        source_kind="test",
        action="repo.cloned",
        category="repository",
        context=context or {},
    )


async def test_unrenderable_record_is_dropped_and_the_rest_flows(
    tmp_path: Path,
) -> None:
    """An integer beyond 64 bits in the context fails only its own record."""
    metrics = Metrics()
    settings = FileSinkSettings(
        kind="file", name="out", path=tmp_path / "out.jsonl", batch_max_wait=0.0
    )
    channel = DeliveryChannel(FileSink(settings), settings, metrics)
    acked: list[int] = []
    records = [_event(1), _event(2, {"git": {"bytes": 2**70}}), _event(3)]

    with capture_logs() as logs:
        await channel.start()
        await channel.submit(list(records), lambda: acked.append(1))
        await asyncio.wait_for(channel.drain(), 10)
        await channel.aclose()

    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    ids = [orjson.loads(line)["event"]["id"] for line in lines]
    assert ids == ["e1", "e3"]
    assert acked == [1]
    assert any(
        entry["event"] == "sink.record_unrenderable" and entry["record_id"] == "e2"
        for entry in logs
    )
    dropped = metrics.registry.get_sample_value(
        "bbaudit_sink_records_dropped_total", {"sink": "out", "reason": "unrenderable"}
    )
    assert dropped == 1

"""The ``dc_file`` source: audit-file lines in, audit events and checkpoints out."""

from __future__ import annotations

import shutil
from contextlib import aclosing
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.plugins import SOURCES, Runtime
from collector.sources.dc_file import DcFileSettings, DcFileSource
from collector.stages import SourceBatch
from collector.state import StateStore
from tests.conftest import SAMPLES

SAMPLE = SAMPLES / "elastic_bitbucket_dc_audit_file_lines.ndjson"


def _source(
    tmp_path: Path, metrics: Metrics, **settings: Any
) -> tuple[DcFileSource, StateStore]:
    store = StateStore.in_dir(tmp_path / "state")
    runtime = Runtime(state_dir=tmp_path / "state", store=store, metrics=metrics)
    values = {"kind": "dc_file", "name": "audit-files", "path": str(tmp_path / "*.log")}
    values.update(settings)
    return DcFileSource(DcFileSettings.model_validate(values), runtime), store


async def _collect(source: DcFileSource, checkpoint: Any = None) -> list[SourceBatch]:
    return [b async for b in source.batches(checkpoint, follow=False)]


def _sample_lines() -> list[bytes]:
    if not SAMPLE.exists():
        pytest.skip("shared sample file is not present")
    return [line for line in SAMPLE.read_bytes().splitlines() if line]


def _rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "bbaudit_events_rejected_total", {"source": "audit-files", "reason": reason}
    )
    return value or 0.0


def test_kind_is_registered() -> None:
    """The module registers kind dc_file with its settings model."""
    plugin = SOURCES.get("dc_file", "sources[0].kind")

    assert plugin.settings is DcFileSettings


def test_default_settings() -> None:
    """Defaults follow Bitbucket's layout and the tailer's limits."""
    settings = DcFileSettings.model_validate({"kind": "dc_file", "name": "n"})

    assert settings.path == "/var/atlassian/application-data/bitbucket/log/audit/*.log"
    assert (settings.batch_size, settings.poll_interval) == (500, 1.0)
    assert settings.max_line_bytes == 1024 * 1024
    assert settings.from_beginning is True


async def test_elastic_sample_file(tmp_path: Path, metrics: Metrics) -> None:
    """Every line of the Elastic sample becomes one dc_file audit event."""
    lines = _sample_lines()
    shutil.copy(SAMPLE, tmp_path / "20211127-00000.log")
    source, store = _source(tmp_path, metrics, instance="bb-prod")

    batches = await _collect(source)
    events = [e for b in batches for e in b.events]
    store.close()

    assert len(events) == len(lines)
    assert {e.source_kind for e in events} == {"dc_file"}
    assert {e.instance for e in events} == {"bb-prod"}
    assert len({e.id for e in events}) == len(events)
    assert batches[-1].caught_up
    assert events[0].raw == orjson.loads(lines[0])
    # The line's size travels along, for the sinks' batch-size estimate.
    assert [e.raw_size for e in events] == [len(line) for line in lines]


async def test_malformed_lines_are_rejected_and_counted(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Bad JSON, wrong types and deep nesting are rejected; good lines flow on."""
    good = _sample_lines()[:2]
    deep = b"[" * 2000 + b"]" * 2000
    wrong_type = orjson.dumps({"auditType": {"action": "x"}, "timestamp": "nope"})
    content = [good[0], b"{not json", deep, b"[1, 2]", wrong_type, good[1]]
    (tmp_path / "a.log").write_bytes(b"\n".join(content) + b"\n")
    source, store = _source(tmp_path, metrics)

    with capture_logs() as logs:
        batches = await _collect(source)
    store.close()

    assert sum(len(b.events) for b in batches) == 2
    assert sum(b.rejected for b in batches) == 4
    rejected = [e for e in logs if e["event"] == "source.record_rejected"]
    assert [e["line"] for e in rejected] == [2, 3, 4, 5]
    assert {e["source"] for e in rejected} == {"audit-files"}
    assert rejected[0]["file"] == str(tmp_path / "a.log")
    assert _rejected(metrics, "invalid_json") == 2
    assert _rejected(metrics, "invalid_record") == 2


async def test_tailer_skips_are_counted(tmp_path: Path, metrics: Metrics) -> None:
    """Overlong and non-UTF-8 lines count as rejected with their own reasons."""
    good = _sample_lines()[0]
    content = [b"\xff\xfe{}", b"{" + b" " * 5000 + b"}", good]
    (tmp_path / "a.log").write_bytes(b"\n".join(content) + b"\n")
    source, store = _source(tmp_path, metrics, max_line_bytes=2048)

    batches = await _collect(source)
    store.close()

    assert sum(len(b.events) for b in batches) == 1
    assert _rejected(metrics, "not_utf8") == 1
    assert _rejected(metrics, "line_too_long") == 1


async def test_restart_from_checkpoint_resumes_exactly(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Restarting from each batch's checkpoint yields each audit event once."""
    lines = _sample_lines()
    (tmp_path / "a.log").write_bytes(b"\n".join(lines) + b"\n")
    source, store = _source(tmp_path, metrics, batch_size=7)
    ids: list[str] = []
    checkpoint: Any = None

    for _ in range(10):
        # A "crash" after the first batch of each run.
        async with aclosing(source.batches(checkpoint, follow=False)) as batches:
            batch = await anext(batches)
        ids.extend(e.id for e in batch.events)
        checkpoint = batch.checkpoint
        if batch.caught_up:
            break
    store.close()

    assert len(ids) == len(lines)
    assert len(set(ids)) == len(ids)


async def test_checkpoint_round_trips_through_the_state_store(
    tmp_path: Path, metrics: Metrics
) -> None:
    """The checkpoint survives orjson and SQLite and resumes after the last line."""
    lines = _sample_lines()
    log = tmp_path / "a.log"
    log.write_bytes(b"\n".join(lines[:5]) + b"\n")
    source, store = _source(tmp_path, metrics)
    batches = await _collect(source)
    store.commit({"audit-files": batches[-1].checkpoint})

    log.write_bytes(log.read_bytes() + b"\n".join(lines[5:8]) + b"\n")
    again = await _collect(source, store.load_checkpoint("audit-files"))
    store.close()

    assert sum(len(b.events) for b in again) == 3


async def test_simulator_audit_files(tmp_path: Path, metrics: Metrics) -> None:
    """The simulator's rotated audit files are read whole, oldest first."""
    from datetime import UTC, datetime

    from collector.simulator import build_world

    world = build_world(5, users=25, days=1.0, end=datetime(2026, 3, 2, tzinfo=UTC))
    world.write_files(tmp_path, max_file_bytes=64 * 1024)
    source, store = _source(
        tmp_path, metrics, path=str(tmp_path / "log" / "audit" / "*.log")
    )

    batches = await _collect(source)
    store.close()
    events = [e for b in batches for e in b.events]

    assert len(events) == len(world.dc_events)
    assert sum(b.rejected for b in batches) == 0
    assert [e.time for e in events] == sorted(e.time for e in events)

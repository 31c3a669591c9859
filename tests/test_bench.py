"""The benchmark's sink drivers run end to end on a few thousand events."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bench.__main__ import report
from bench.drivers import bench_hec, bench_kafka, bench_syslog
from bench.pipeline_bench import Result

EVENTS = 2_000


@pytest.fixture(autouse=True)
def _gc_as_before() -> Iterator[None]:
    """Undo the service GC tuning the full run applies to this process."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def check(full: Result, minimal: Result, label: str) -> None:
    """Both runs measured a rate, and every record they sent arrived."""
    assert (full.label, minimal.label) == (label, label)
    assert full.events == minimal.events == EVENTS
    assert full.rate > 0 and minimal.rate > 0
    assert full.sent >= EVENTS  # events plus the alerts the rules raised
    assert minimal.sent == EVENTS
    assert full.complete and minimal.complete


async def test_hec_driver_counts_every_envelope() -> None:
    """The HEC driver's two runs are counted in full by the emulator process."""
    full, minimal = await bench_hec(EVENTS, "pool")

    check(full, minimal, "hec")
    assert full.arrived == full.sent
    assert minimal.arrived == EVENTS


async def test_syslog_driver_counts_every_line() -> None:
    """The syslog driver's two runs are written out in full by rsyslog."""
    full, minimal = await bench_syslog(EVENTS, "pool")

    check(full, minimal, "syslog")
    assert full.arrived == full.sent
    assert minimal.arrived == EVENTS


async def test_kafka_driver_runs() -> None:
    """The Kafka driver measures both runs against a tansu it starts."""
    full, minimal = await bench_kafka(EVENTS, "pool")

    check(full, minimal, "kafka")


def test_table_marks_target_sinks_and_losses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Target sinks show the >=0.5 goal, file is info, and a loss is shown."""
    file_full = Result("file", 10, 1.0, 0.0, 50.0, sent=10)
    file_min = Result("file", 10, 0.5, 0.0, 40.0, sent=10)
    hec_full = Result("hec", 10, 1.0, 0.0, 50.0, sent=12, arrived=10)
    hec_min = Result("hec", 10, 0.5, 0.0, 40.0, sent=10, arrived=10)

    report([(file_full, file_min), (hec_full, hec_min)])

    rows = capsys.readouterr().out.splitlines()
    assert "target" in rows[0] and "arrived" in rows[0]
    assert rows[1].split()[:6] == ["file", "10", "10", "20", "0.50", "info"]
    assert rows[2].split()[5:7] == [">=0.5", "-2/-0"]

"""Fixtures of the fault harness and the report it writes at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.simulator.world import World
from tests.faults.harness import (
    PROJECT_ROOT,
    FaultBench,
    RowResult,
    Scale,
    current_scale,
    make_world,
    render_report,
)
from tests.hec_receiver import HecReceiver

_ROWS: list[RowResult] = []
_STARTED = time.monotonic()


@pytest.fixture(scope="session")
def scale() -> Scale:
    """The short form (``make test``) or the long one (``make faults``)."""
    return current_scale()


@pytest.fixture(scope="session")
def fault_world(scale: Scale) -> World:
    """The generated organisation every row reads."""
    return make_world(scale)


@pytest.fixture
def bench(fault_world: World, scale: Scale, tmp_path: Path) -> Iterator[FaultBench]:
    """A fresh simulator and working directory; the pipeline is killed after."""
    with FaultBench(fault_world, tmp_path / "bench", scale) as bench:
        yield bench


@pytest.fixture
def receiver() -> Iterator[HecReceiver]:
    """Our HEC receiver on a free loopback port."""
    hec = HecReceiver()
    hec.start()
    yield hec
    hec.stop()


@pytest.fixture
def report() -> list[RowResult]:
    """Where a test puts its report row."""
    return _ROWS


def report_path(scale: Scale) -> Path:
    """``BBAUDIT_FAULTS_REPORT``, else docs/faults.md for the long form and a
    file under .pytest_cache for the short one (so ``make test`` leaves the tree
    clean)."""
    chosen = os.environ.get("BBAUDIT_FAULTS_REPORT")
    if chosen:
        return Path(chosen)
    if scale.name == "long":
        return PROJECT_ROOT / "docs" / "faults.md"
    return PROJECT_ROOT / ".pytest_cache" / "faults-short.md"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Write the report and print its table."""
    if not _ROWS:
        return
    scale = current_scale()
    rows = list(_ROWS)
    text = render_report(rows, scale, time.monotonic() - _STARTED)
    path = report_path(scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    terminalreporter.section("fault report")
    for line in text.splitlines():
        if line.startswith("|"):
            terminalreporter.write_line(line)
    terminalreporter.write_line(f"written to {path}")

"""The Bitbucket side misbehaves: the pipeline neither crashes, hangs nor loses."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from collector.simulator.faults import Faults
from tests.faults.harness import (
    FaultBench,
    RowResult,
    Scale,
    assert_row,
    hec_sink,
)
from tests.hec_receiver import HecReceiver


@dataclass(frozen=True, slots=True)
class SourceFault:
    """A simulator fault; ``phase`` faults are switched off after a while,
    the others stay on for the whole row."""

    name: str
    faults: Faults
    phase: bool = True
    extra_s: float = 0.0


SOURCE_FAULTS = [
    SourceFault(
        "source 429 + Retry-After (every 3rd request)",
        Faults(rate_limit_every=3, retry_after_s=1),
        phase=False,
    ),
    SourceFault("source 500 on page 2, forever", Faults(fail_page=2), phase=False),
    SourceFault("source truncated JSON", Faults(truncated_json=True)),
    SourceFault("source 50 MB body", Faults(huge_body_mb=50)),
    SourceFault("source nesting 10,000 deep", Faults(deep_nesting=10_000)),
    SourceFault("source invalid UTF-8", Faults(invalid_utf8=True)),
    # Long enough for a trickled response to run into the request deadline.
    SourceFault("source slow loris", Faults(slow_loris=True), extra_s=6),
    SourceFault("source cursor loop", Faults(cursor_loop=True)),
]


@pytest.mark.parametrize("fault", SOURCE_FAULTS, ids=lambda f: f.name)
def test_source_fault(
    fault: SourceFault,
    bench: FaultBench,
    receiver: HecReceiver,
    scale: Scale,
    report: list[RowResult],
) -> None:
    """The fault is served (for a phase, or always); every served event arrives."""
    bench.set_faults(fault.faults)
    # One row logs at DEBUG, so that the secret scan sees the chattiest output.
    level = "debug" if fault.faults.rate_limit_every else "info"
    bench.configure(hec_sink(receiver), log_level=level)
    bench.pipeline.start()

    if fault.phase:
        time.sleep(scale.fault_s + fault.extra_s)
        assert bench.pipeline.alive, "the pipeline died on a hostile response"
        bench.set_faults(Faults())
    recover_s = bench.wait_complete(scale.recover_deadline_s)
    alive = bench.pipeline.alive
    assert bench.pipeline.terminate() == 0

    row = bench.result(fault.name, recover_s, _source_note(bench, fault))
    report.append(row)
    assert alive
    assert_row(bench, row)
    assert row.unserved == 0
    assert recover_s is not None, "not caught up once the fault ended"


def _source_note(bench: FaultBench, fault: SourceFault) -> str:
    events = bench.log_events()
    interesting = {
        name: count
        for name, count in events.items()
        if name.startswith(("poll.", "source.", "page.", "http."))
        and not name.endswith(("completed", "started"))
    }
    listed = ", ".join(f"{n} x{c}" for n, c in sorted(interesting.items()))
    phase = f"{bench.scale.fault_s + fault.extra_s:g} s phase" if fault.phase else ""
    return "; ".join(p for p in (phase, listed) if p)

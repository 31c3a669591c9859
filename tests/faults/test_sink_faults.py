"""The sink goes away, slows down or refuses: the pipeline waits, then catches up."""

from __future__ import annotations

import time

from tests.faults.harness import (
    FaultBench,
    RowResult,
    Scale,
    assert_row,
    hec_sink,
)
from tests.faults.proxy import CuttableProxy
from tests.hec_receiver import HecReceiver

FIRST_RECORDS = 20
# Small batches to a receiver that takes its time, so that the fault lands while
# most of the audit log is still on its way.
TRICKLE_DELAY_S = 0.2
TRICKLE_BATCH = 10


def run_fault(
    bench: FaultBench, scale: Scale, start: object, end: object, hold_s: float
) -> float | None:
    """Start following, break the sink after the first records, mend it after
    ``hold_s``; seconds from mending until the sink holds every event."""
    assert callable(start) and callable(end)
    bench.pipeline.start()
    assert bench.wait_delivered(FIRST_RECORDS, scale.deadline_s)
    start()
    time.sleep(hold_s)
    assert bench.pipeline.alive, "the pipeline died while its sink was broken"
    end()
    recover_s = bench.wait_complete(scale.deadline_s)
    assert bench.pipeline.terminate() == 0
    return recover_s


def test_sink_stopped_then_back(
    bench: FaultBench, receiver: HecReceiver, scale: Scale, report: list[RowResult]
) -> None:
    """Connections refused for the outage, then the receiver listens again."""
    proxy = CuttableProxy(receiver.port)
    proxy.mend()
    receiver.delay = TRICKLE_DELAY_S
    sink = hec_sink(receiver, batch_max_records=TRICKLE_BATCH, url=proxy.url)
    bench.configure(sink)

    try:
        recover_s = run_fault(bench, scale, proxy.cut, proxy.mend, scale.outage_s)
    finally:
        proxy.cut()

    row = bench.result(
        f"sink stopped {scale.outage_s:g} s", recover_s, _retries_note(bench)
    )
    report.append(row)
    assert_row(bench, row)


def test_sink_slow(
    bench: FaultBench, receiver: HecReceiver, scale: Scale, report: list[RowResult]
) -> None:
    """Every HEC request takes a second; the pipeline keeps up by waiting."""
    bench.configure(hec_sink(receiver, batch_max_records=100))
    receiver.delay = 1.0
    started = time.monotonic()

    bench.pipeline.start()
    done_s = bench.wait_complete(scale.deadline_s * 2)
    assert bench.pipeline.terminate() == 0

    requests = len(receiver.requests)
    row = bench.result(
        "sink slow (1 s per request)",
        done_s,
        f"{requests} requests; whole run {time.monotonic() - started:.0f} s",
    )
    report.append(row)
    assert_row(bench, row)


def test_sink_refusing_503_storm(
    bench: FaultBench, receiver: HecReceiver, scale: Scale, report: list[RowResult]
) -> None:
    """HEC answers 503 (server busy) to everything for the outage, then recovers."""
    receiver.delay = TRICKLE_DELAY_S
    bench.configure(hec_sink(receiver, batch_max_records=TRICKLE_BATCH))

    def busy() -> None:
        receiver.busy = True

    def idle() -> None:
        receiver.busy = False

    recover_s = run_fault(bench, scale, busy, idle, scale.outage_s)

    refused = sum(1 for r in receiver.requests if r.status == 503)
    row = bench.result(
        f"sink 503 storm {scale.outage_s:g} s",
        recover_s,
        f"{refused} requests refused; {_retries_note(bench)}",
    )
    report.append(row)
    assert refused > 0
    assert_row(bench, row)


def _retries_note(bench: FaultBench) -> str:
    events = bench.log_events()
    return (
        f"{events['sink.send_retried']} retries logged,"
        f" {events['sink.unhealthy']} unhealthy, {events['sink.recovered']} recovered"
    )

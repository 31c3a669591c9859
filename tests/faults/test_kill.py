"""SIGKILL the pipeline at random moments and restart it: nothing is lost."""

from __future__ import annotations

import time

from tests.faults.harness import (
    FaultBench,
    RowResult,
    Scale,
    assert_row,
    hec_sink,
    seeded_kill_delays,
)
from tests.hec_receiver import HecReceiver


def test_kill_9_at_random_moments(
    bench: FaultBench, receiver: HecReceiver, scale: Scale, report: list[RowResult]
) -> None:
    """Twenty (short form: five) SIGKILLs mid-run, then a run to caught-up."""
    receiver.delay = 0.05
    bench.configure(hec_sink(receiver, batch_max_records=20))
    pipeline = bench.pipeline

    for delay in seeded_kill_delays(1, scale.kills, 0.3, 2.5):
        pipeline.start()
        time.sleep(delay)
        pipeline.kill()
    code, recover_s = pipeline.run_once(scale.deadline_s)

    row = bench.result(
        f"kill -9 x{scale.kills}, restart",
        recover_s,
        f"{pipeline.kills} killed mid-run; final --once exit {code}",
    )
    report.append(row)
    assert code == 0
    assert_row(bench, row)

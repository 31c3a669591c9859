"""A full disk under the file sink and under the spool: a clear error, no
corruption, and recovery once space is back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import (
    FaultBench,
    RowResult,
    Scale,
    assert_row,
    file_sink,
    hec_sink,
)
from tests.faults.proxy import CuttableProxy
from tests.hec_receiver import HecReceiver

SPOOL_DISK_BYTES = 2 * 1024 * 1024
# The file sink's disk must hold the whole rendered log once space is freed.
SINK_DISK_BYTES = 32 * 1024 * 1024
# What the filler leaves free: room for a few batches, not for the audit log.
HEADROOM_BYTES = 24 * 1024


@pytest.fixture
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted under the test's directory (skipped if not allowed); its
    size is the test's ``disk_bytes`` parameter, 2 MB by default."""
    size = getattr(request, "param", SPOOL_DISK_BYTES)
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free; returns the filler file."""
    filler = disk / "filler"
    free = _free_bytes(disk)
    with filler.open("wb") as out:
        out.write(b"\0" * max(free - leave, 0))
    return filler


def _free_bytes(path: Path) -> int:
    import os

    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@pytest.mark.parametrize("small_disk", [SINK_DISK_BYTES], indirect=True, ids=["32MB"])
def test_file_sink_on_a_full_disk(
    bench: FaultBench, small_disk: Path, scale: Scale, report: list[RowResult]
) -> None:
    """ENOSPC on the JSONL file is retried and logged; freeing space recovers,
    and every line in the file is whole JSON."""
    output = small_disk / "events.jsonl"
    bench.configure(file_sink(output, batch_max_records=20))
    filler = fill(small_disk, HEADROOM_BYTES)

    bench.pipeline.start()
    time.sleep(scale.fault_s)
    assert bench.pipeline.alive
    filler.unlink()
    recover_s = bench.wait_complete(scale.deadline_s)
    assert bench.pipeline.terminate() == 0

    errors = [line for line in bench.log_lines() if "No space left" in line]
    row = bench.result(
        "disk full under the file sink (tmpfs filled)",
        recover_s,
        f"{len(errors)} log lines name ENOSPC",
    )
    report.append(row)
    assert errors, "a full disk must be reported in the log"
    assert_row(bench, row)
    assert bench.sink is not None
    assert not bench.sink.corrupt_lines(), "a failed write left a torn line"


def test_spool_on_a_full_disk(
    bench: FaultBench,
    receiver: HecReceiver,
    small_disk: Path,
    scale: Scale,
    report: list[RowResult],
) -> None:
    """With the sink cut, batches spool onto a 2 MB disk until it is full; the
    channel says so and holds input; once the sink is back all arrive."""
    state = bench.workdir / "state"
    (state / "spool").parent.mkdir(parents=True, exist_ok=True)
    (state / "spool").symlink_to(small_disk, target_is_directory=True)
    fill(small_disk, 256 * 1024)
    proxy = CuttableProxy(receiver.port)
    proxy.mend()
    proxy.cut()
    sink = hec_sink(
        receiver, url=proxy.url, batch_max_records=10, spool_after_attempts=1
    )
    bench.configure(sink, state_dir=state)

    try:
        bench.pipeline.start()
        time.sleep(scale.outage_s)
        assert bench.pipeline.alive
        spooled = sorted(p.name for p in small_disk.rglob("*.db"))
        proxy.mend()
        recover_s = bench.wait_complete(scale.deadline_s)
        assert bench.pipeline.terminate() == 0
    finally:
        proxy.cut()

    events = bench.log_events()
    row = bench.result(
        "disk full under the spool (2 MB tmpfs, sink cut)",
        recover_s,
        f"spool files {spooled}; spool_full x{events['sink.spool_full']}",
    )
    report.append(row)
    assert spooled, "the sink was down: batches must have gone to the spool"
    assert_row(bench, row)

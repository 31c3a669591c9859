"""One running bbaudit per state directory (collector.state_lock)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from collector.cli import EXIT_FAILED
from collector.state_lock import LOCK_NAME, StateDirLock
from tests.test_cli_once import run_cli

HOLD_LOCK = """
import sys, time
from pathlib import Path
from collector.state_lock import StateDirLock
StateDirLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_second_holder_is_refused_with_the_first_pid(tmp_path: Path) -> None:
    """A second lock on the same directory fails with EBUSY and names the holder."""
    first = StateDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(OSError) as refused:
            StateDirLock(tmp_path).acquire()
    finally:
        first.release()

    assert refused.value.errno == errno.EBUSY
    assert f"pid {os.getpid()}" in str(refused.value)


def test_deleting_the_lock_file_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    """The lock is on the directory: removing bbaudit.lock changes nothing."""
    first = StateDirLock(tmp_path)
    first.acquire()
    try:
        (tmp_path / LOCK_NAME).unlink()
        with pytest.raises(OSError) as refused:
            StateDirLock(tmp_path).acquire()
    finally:
        first.release()

    assert refused.value.errno == errno.EBUSY


def test_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    """After release (a clean stop) the next run takes the lock."""
    first = StateDirLock(tmp_path)
    first.acquire()
    first.release()
    first.release()  # idempotent

    second = StateDirLock(tmp_path)
    second.acquire()
    second.release()


def _holder(state_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_cli_refuses_a_state_dir_in_use_then_runs_after_kill_9(
    tmp_path: Path,
) -> None:
    """`bbaudit run` exits 1 naming the other process; a killed holder frees it."""
    state_dir = tmp_path / "state"
    config = tmp_path / "bbaudit.yaml"
    config.write_text(
        f"state_dir: {state_dir}\n"
        "http: {enabled: false}\n"
        "sinks:\n"
        f"  - {{kind: file, name: out, path: {tmp_path / 'out.jsonl'}}}\n"
    )
    holder = _holder(state_dir)
    try:
        refused = run_cli("run", "-c", str(config), "--once")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()
    ran = run_cli("run", "-c", str(config), "--once")

    assert refused.returncode == EXIT_FAILED
    assert f"pid {holder.pid}" in refused.stderr
    assert "in use by another bbaudit process" in refused.stderr
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (state_dir / LOCK_NAME).exists()

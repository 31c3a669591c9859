"""`bbaudit run --once`: its exit code says whether everything was delivered."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from collector.cli import EXIT_OK, EXIT_SPOOLED
from tests.conftest import PROJECT_ROOT, SHARED_DATA

AUDIT_LINES = SHARED_DATA / "bitbucket" / "elastic_bitbucket_dc_audit_file_lines.ndjson"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``bbaudit`` in a process of its own: the CLI configures logging for the
    whole process, which would leak into the tests that run after it."""
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(tmp_path: Path, sink: str) -> Path:
    logs = tmp_path / "audit"
    logs.mkdir(exist_ok=True)
    shutil.copy(AUDIT_LINES, logs / "audit.log")
    config = tmp_path / "bbaudit.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "http: {enabled: false}\n"
        "log: {level: error}\n"
        "pipeline: {drain_timeout: 2s}\n"
        "sources:\n"
        f"  - {{kind: dc_file, name: dc, path: '{logs}/*.log'}}\n"
        f"sinks:\n  - {sink}\n"
    )
    return config


def test_once_with_a_dead_sink_exits_3_and_keeps_the_records(tmp_path: Path) -> None:
    """Records spooled for a sink that never came back make --once exit 3."""
    sink = (
        f"{{kind: splunk_hec, name: hec, url: 'http://127.0.0.1:{_closed_port()}',"
        " token: t0k3n-0000, retry_initial: 0.01s, retry_max: 0.05s,"
        " spool_after_attempts: 1}"
    )

    done = run_cli("run", "-c", str(_config(tmp_path, sink)), "--once")

    assert done.returncode == EXIT_SPOOLED, done.stderr[-2000:]
    assert (tmp_path / "state" / "spool" / "hec").is_dir()


def test_once_that_delivered_everything_exits_0(tmp_path: Path) -> None:
    """A healthy sink: everything written, exit 0."""
    out = tmp_path / "out.jsonl"
    sink = f"{{kind: file, name: out, path: '{out}'}}"

    done = run_cli("run", "-c", str(_config(tmp_path, sink)), "--once")

    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    assert len(out.read_text().splitlines()) > 20

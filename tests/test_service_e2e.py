"""End to end: the installed ``bbaudit`` command as real processes.

The demo must never let its API token reach its output, its files or its
metrics, and must answer the probes while it runs. ``bbaudit run`` must drain
and exit 0 on SIGTERM, log the drain as JSON lines, and resume from its state
without writing any event twice.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.simulator import build_world
from collector.simulator.server import SimulatorServer

GRACE_S = 30.0
PROBES = ("/metrics", "/healthz", "/readyz")
LOG_KEYS = ("timestamp", "level", "log_event")


@dataclass(slots=True)
class Probe:
    """One answer of the health server."""

    path: str
    status: int
    body: bytes
    after_start_s: float


@dataclass(slots=True)
class ServiceRuns:
    """What the SIGTERM run and the resumed ``--once`` run left behind."""

    first_rc: int
    first_exit_s: float
    first_events: int
    second_rc: int
    ready_before_term: bool
    probes_after_term: list[Probe]
    logs: list[bytes]
    stderr: bytes
    token: str
    event_ids: list[str] = field(default_factory=list)
    reference_ids: set[str] = field(default_factory=set)


def _bbaudit() -> str:
    """The console script of the venv that runs the tests."""
    beside = Path(sys.executable).parent / "bbaudit"
    if beside.is_file():
        return str(beside)
    found = shutil.which("bbaudit", path=str(Path(sys.executable).parent))
    assert found, "bbaudit is not installed in the test venv"
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, bytes] | None:
    """GET ``path`` on the loopback health server; None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process the test started if it is still running."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _assert_readyz(probe: Probe) -> None:
    assert probe.status in (200, 503), probe
    body = json.loads(probe.body)
    assert isinstance(body, dict) and "ready" in body
    if probe.status == 503:
        assert body["ready"] is False
        assert body.get("reasons") or body.get("draining"), body


def test_demo_never_shows_its_token_and_answers_probes(tmp_path: Path) -> None:
    """The demo's token is in none of its output, files or metrics; probes answer."""
    token = "e2eTok-" + secrets.token_hex(16)
    out, port = tmp_path / "demo", _free_port()
    stdout, stderr = tmp_path / "demo.out", tmp_path / "demo.err"
    command = [_bbaudit(), "demo", "--token", token, "-o", str(out)]
    command += ["--users", "200", "--http-port", str(port), "--hold", "3"]

    probes: list[Probe] = []
    started = time.monotonic()
    with stdout.open("wb") as so, stderr.open("wb") as se:
        proc = subprocess.Popen(command, stdout=so, stderr=se, env=_env())
        try:
            while proc.poll() is None and time.monotonic() - started < 60:
                for route in PROBES:
                    answer = _get(port, route)
                    if answer is not None:
                        elapsed = time.monotonic() - started
                        probes.append(Probe(route, *answer, elapsed))
                time.sleep(0.2)
            rc = proc.wait(timeout=5)
        finally:
            _stop(proc)

    assert rc == 0, stderr.read_bytes()[-2000:]
    needle = token.encode()
    for path in [stdout, stderr, *sorted(out.rglob("*"))]:
        if path.is_file():
            assert needle not in path.read_bytes(), f"token leaked into {path}"
    for name in ("events.jsonl", "alerts.jsonl", "state/state.sqlite"):
        assert (out / name).stat().st_size > 0, name

    by_path = {p: [x for x in probes if x.path == p] for p in PROBES}
    print(
        "\ndemo e2e: readyz answers (status, seconds after start): "
        f"{[(x.status, round(x.after_start_s, 1)) for x in by_path['/readyz']]}"
    )
    assert any(x.status == 200 for x in by_path["/metrics"]), probes[-3:]
    assert any(x.status == 200 for x in by_path["/healthz"]), probes[-3:]
    assert by_path["/readyz"], "no /readyz answer"
    for probe in probes:
        assert needle not in probe.body, f"token leaked into {probe.path}"
        if probe.path == "/readyz":
            _assert_readyz(probe)
    metrics = [x.body for x in by_path["/metrics"] if x.status == 200][-1]
    assert b"# TYPE" in metrics and b"bbaudit" in metrics


def _config(tmp: Path, base_url: str, token: str, world: Any, port: int) -> Path:
    """A ``bbaudit run`` config like the demo's: DC REST and Cloud into a file."""
    config = {
        "state_dir": str(tmp / "state"),
        "log": {"level": "info", "format": "json"},
        "http": {"enabled": True, "host": "127.0.0.1", "port": port},
        "sources": [
            {
                "kind": "dc_rest",
                "name": "dc-rest",
                "instance": world.instance,
                "base_url": base_url,
                "auth": {"token": token},
                "lookback": "30h",
                "settle_lag": 0,
                "limit": 100,
            },
            {
                "kind": "cloud_org",
                "name": "cloud",
                "org_id": world.org_id,
                "api_key": token,
                "base_url": base_url,
                "lookback": "30h",
                "limit": 100,
            },
        ],
        "sinks": [
            {
                "kind": "file",
                "name": "events",
                "path": str(tmp / "events.jsonl"),
                "receives": ["events"],
            }
        ],
    }
    path = tmp / "config.yaml"
    # JSON is YAML; the loader reads it as any config file.
    path.write_text(json.dumps(config, indent=2))
    return path


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _wait_ready_and_writing(
    proc: subprocess.Popen[bytes], port: int, events: Path
) -> bool:
    """Wait until events are in the sink file and /readyz answers 200."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        answer = _get(port, "/readyz")
        if answer is not None and answer[0] == 200 and _line_count(events) > 0:
            return True
        time.sleep(0.05)
    return False


def _terminate_and_watch(
    proc: subprocess.Popen[bytes], port: int
) -> tuple[float, list[Probe]]:
    """SIGTERM; probe /readyz until the process is gone; the seconds it took."""
    probes: list[Probe] = []
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    while proc.poll() is None and time.monotonic() - sent < GRACE_S + 5:
        answer = _get(port, "/readyz")
        if answer is not None:
            probes.append(Probe("/readyz", *answer, time.monotonic() - sent))
        time.sleep(0.02)
    return time.monotonic() - sent, probes


@pytest.fixture(scope="module")
def service_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceRuns]:
    """Run ``bbaudit run`` against the simulator, SIGTERM it while it reads,
    then run it again with ``--once`` on the same state."""
    tmp = tmp_path_factory.mktemp("service")
    token = "e2eRun-" + secrets.token_hex(16)
    world = build_world(11, users=120, days=1.0)
    port = _free_port()
    events = tmp / "events.jsonl"
    out1, out2, err = tmp / "run1.out", tmp / "run2.out", tmp / "run.err"
    with SimulatorServer(world, token=token) as simulator:
        config = _config(tmp, simulator.base_url, token, world, port)
        command = [_bbaudit(), "run", "-c", str(config)]
        with out1.open("wb") as so, err.open("wb") as se:
            proc = subprocess.Popen(command, stdout=so, stderr=se, env=_env(), cwd=tmp)
            try:
                ready = _wait_ready_and_writing(proc, port, events)
                first_events = _line_count(events)
                exit_s, probes = _terminate_and_watch(proc, port)
                first_rc = proc.wait(timeout=5)
            finally:
                _stop(proc)
        written_first = _line_count(events)
        with out2.open("wb") as so, err.open("ab") as se:
            second = subprocess.run(
                [*command, "--once"],
                stdout=so,
                stderr=se,
                env=_env(),
                cwd=tmp,
                timeout=60,
                check=False,
            )
        reference = _fresh_run_ids(tmp / "fresh", simulator.base_url, token, world)

    ids = [
        orjson.loads(line)["event"]["id"] for line in events.read_bytes().splitlines()
    ]
    print(
        f"\nservice e2e: {first_events} events when SIGTERM was sent, "
        f"{written_first} after the drain, {len(ids)} after --once, "
        f"{len(reference)} in a fresh --once run; exit {exit_s:.2f}s after "
        f"SIGTERM; readyz after SIGTERM: {Counter(p.status for p in probes)}"
    )
    yield ServiceRuns(
        first_rc=first_rc,
        first_exit_s=exit_s,
        first_events=written_first,
        second_rc=second.returncode,
        ready_before_term=ready,
        probes_after_term=probes,
        logs=out1.read_bytes().splitlines() + out2.read_bytes().splitlines(),
        stderr=err.read_bytes(),
        token=token,
        event_ids=ids,
        reference_ids=reference,
    )


def _fresh_run_ids(tmp: Path, base_url: str, token: str, world: Any) -> set[str]:
    """The event ids one uninterrupted ``--once`` run writes from nothing."""
    tmp.mkdir()
    config = _config(tmp, base_url, token, world, _free_port())
    subprocess.run(
        [_bbaudit(), "run", "-c", str(config), "--once"],
        stdout=subprocess.DEVNULL,
        env=_env(),
        cwd=tmp,
        timeout=60,
        check=True,
    )
    lines = (tmp / "events.jsonl").read_bytes().splitlines()
    return {orjson.loads(line)["event"]["id"] for line in lines}


def _log_events(runs: ServiceRuns) -> list[str]:
    return [str(orjson.loads(line).get("log_event")) for line in runs.logs if line]


def test_sigterm_drains_and_exits_zero(service_runs: ServiceRuns) -> None:
    """SIGTERM while reading: /readyz turns 503, exit 0 in the grace, drain logged."""
    runs = service_runs
    assert runs.ready_before_term, "never ready with events written"
    assert runs.first_rc == 0, runs.stderr[-2000:]
    assert runs.first_exit_s < GRACE_S

    for probe in runs.probes_after_term:
        _assert_readyz(probe)
    # The loop may answer a probe or two before it handles the signal; once it
    # said 503 it must not say ready again.
    statuses = [p.status for p in runs.probes_after_term]
    if 503 in statuses:
        assert 200 not in statuses[statuses.index(503) :], statuses

    names = _log_events(runs)
    first_run = names[: names.index("pipeline.stopped") + 1]
    assert "service.signal_received" in first_run
    assert first_run.index("pipeline.draining") < first_run.index("pipeline.stopped")


def test_restart_once_writes_no_event_twice(service_runs: ServiceRuns) -> None:
    """The resumed --once run writes each event id once, and all of them."""
    runs = service_runs
    assert runs.second_rc == 0, runs.stderr[-2000:]
    assert runs.first_events > 0
    ids = runs.event_ids
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, duplicates[:5]
    assert len(ids) > runs.first_events
    # Nothing lost either: the same ids as one run that was never stopped.
    assert set(ids) == runs.reference_ids
    assert _log_events(runs).count("pipeline.stopped") == 2


def test_service_logs_are_json_lines(service_runs: ServiceRuns) -> None:
    """Every log line is one JSON object with timestamp, level and log_event."""
    runs = service_runs
    assert runs.logs
    for line in runs.logs:
        record = orjson.loads(line)
        assert isinstance(record, dict), line
        missing = [key for key in LOG_KEYS if key not in record]
        assert not missing, (missing, line)
    assert runs.token.encode() not in b"\n".join(runs.logs) + runs.stderr

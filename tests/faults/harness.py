"""The fault harness: the real ``bbaudit run`` against the simulator, broken on purpose.

A ``FaultBench`` owns one row of the report: a Bitbucket simulator and a sink
receiver in this process (threads on loopback), a working directory with the
config, secrets and state, and the pipeline as a subprocess of the venv's
``bbaudit`` that the row starts, kills with SIGKILL and restarts at will.

The check is always the same: the ids in the sink, compared with the ids the
simulator served in a good response (the collector's own audit searches left
out, as the collector filters them). ``lost`` is served minus delivered and
must be 0; ``duplicated`` is delivered records minus distinct ids.

``BBAUDIT_FAULTS=long`` selects the long form (20 kills, 60 s outages, a
bigger world); anything else is the short form that ``make test`` runs.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from collector.simulator.dc_api import dc_ids
from collector.simulator.faults import Faults
from collector.simulator.records import DcEvent
from collector.simulator.server import SimulatorServer
from collector.simulator.world import COLLECTOR_ACCOUNT, World, build_world
from tests.hec_receiver import HecReceiver

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The console script beside the interpreter running the tests (the venv's).
BBAUDIT = Path(sys.executable).parent / "bbaudit"
SEARCH_KIND_SUFFIX = "audit.search"


@dataclass(frozen=True, slots=True)
class Scale:
    """How hard the harness pushes: the short form or the long one."""

    name: str
    kills: int
    outage_s: float
    fault_s: float
    users: int
    days: float
    deadline_s: float
    recover_deadline_s: float


SHORT = Scale(
    "short",
    kills=5,
    outage_s=10,
    fault_s=4,
    users=40,
    days=0.5,
    deadline_s=60,
    recover_deadline_s=20,
)
LONG = Scale(
    "long",
    kills=20,
    outage_s=60,
    fault_s=20,
    users=120,
    days=1.5,
    deadline_s=240,
    recover_deadline_s=120,
)


def current_scale() -> Scale:
    """The form chosen by ``BBAUDIT_FAULTS`` (``long``, else short)."""
    return LONG if os.environ.get("BBAUDIT_FAULTS") == "long" else SHORT


@dataclass(slots=True)
class RowResult:
    """One line of the report."""

    name: str
    sink: str
    served: int
    delivered: int
    duplicated: int
    lost: int
    unserved: int
    recover_s: float | None
    notes: str = ""
    extra_ids: int = 0

    def cells(self) -> list[str]:
        """The row as markdown cells."""
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        return [
            self.name,
            self.sink,
            str(self.served),
            str(self.delivered),
            str(self.duplicated),
            str(self.lost),
            str(self.unserved),
            recover,
            self.notes,
        ]


REPORT_HEADER = [
    "fault",
    "sink",
    "served",
    "delivered (distinct)",
    "duplicated",
    "lost",
    "never served",
    "recover s",
    "notes",
]


def own_search(event: DcEvent) -> bool:
    """Whether the event is an audit search by the collector (it filters those)."""
    return event.author.name == COLLECTOR_ACCOUNT and event.kind.key.endswith(
        SEARCH_KIND_SUFFIX
    )


@dataclass(slots=True)
class PipelineProcess:
    """``bbaudit run`` as a subprocess; every run appends to one log file."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self, *, once: bool = False) -> None:
        """Start the pipeline (following, or ``--once`` until caught up)."""
        args = [str(BBAUDIT), "run", "-c", str(self.config)]
        if once:
            args.append("--once")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        """Whether the current run is still going."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the current run and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        self.proc.wait(10)
        self.proc = None

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain); SIGKILL if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.proc = None
        return code

    def run_once(self, timeout: float) -> tuple[int | None, float]:
        """Run ``--once`` to caught-up; (exit code or None on timeout, seconds)."""
        started = time.monotonic()
        self.start(once=True)
        assert self.proc is not None
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self.proc = None
        return code, time.monotonic() - started


@dataclass(slots=True)
class Sink:
    """The sink under test: how the config names it and how to read it back."""

    kind: str
    settings: dict[str, Any]
    read_ids: Callable[[], list[str]]
    corrupt_lines: Callable[[], int] = lambda: 0


def hec_sink(receiver: HecReceiver, **tuning: Any) -> Sink:
    """The Splunk HEC sink pointed at our receiver."""
    settings = {
        "kind": "splunk_hec",
        "name": "hec",
        "url": receiver.url,
        "token": receiver.token,
        "receives": ["events"],
        "format": "ecs",
        "timeout": "3s",
        "send_timeout": "6s",
        **DELIVERY_TUNING,
        **tuning,
    }
    return Sink("splunk_hec", settings, receiver.event_ids)


def file_sink(path: Path, **tuning: Any) -> Sink:
    """The JSONL file sink; a line that is not JSON counts as corrupt."""

    def lines() -> list[bytes]:
        if not path.exists():
            return []
        return [line for line in path.read_bytes().split(b"\n") if line]

    def read_ids() -> list[str]:
        ids = []
        for line in lines():
            try:
                ids.append(str(orjson.loads(line)["event"]["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        return ids

    def corrupt() -> int:
        return len(lines()) - len(read_ids())

    settings = {
        "kind": "file",
        "name": "jsonl",
        "path": str(path),
        "receives": ["events"],
        "format": "ecs",
        **DELIVERY_TUNING,
        **tuning,
    }
    return Sink("file", settings, read_ids, corrupt)


DELIVERY_TUNING: dict[str, Any] = {
    "batch_max_records": 50,
    "batch_max_wait": "0.2s",
    "retry_initial": "0.1s",
    "retry_max": "1s",
    "spool_after_attempts": 3,
    "spool_max_bytes": "64MiB",
}


@dataclass
class FaultBench:
    """One row's world: simulator, sink, working directory and pipeline process."""

    world: World
    workdir: Path
    scale: Scale
    faults: Faults = field(default_factory=Faults)
    source_tuning: dict[str, Any] = field(default_factory=dict)
    token: str = field(default_factory=lambda: "simtok-" + secrets.token_hex(16))
    simulator: SimulatorServer | None = None
    sink: Sink | None = None
    process: PipelineProcess | None = None
    secrets_used: list[str] = field(default_factory=list)

    def __enter__(self) -> FaultBench:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.simulator = SimulatorServer(
            self.world, faults=self.faults, token=self.token
        ).start()
        self.secrets_used.append(self.token)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
        if self.simulator is not None:
            self.simulator.stop()

    @property
    def sim(self) -> SimulatorServer:
        """The running simulator."""
        assert self.simulator is not None
        return self.simulator

    def set_faults(self, faults: Faults) -> None:
        """Switch the simulator's faults now (takes effect on the next request)."""
        self.sim.faults = faults

    # config ----------------------------------------------------------------

    def configure(
        self, sink: Sink, *, state_dir: Path | None = None, log_level: str = "info"
    ) -> Path:
        """Write the config (and the secret file) for ``sink``; returns its path.

        ``log_level`` ``debug`` makes the secret scan stricter (more lines)."""
        self.sink = sink
        token_file = self.workdir / "bitbucket-token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        if "token" in sink.settings:
            self.secrets_used.append(str(sink.settings["token"]))
        config = {
            "state_dir": str(state_dir or self.workdir / "state"),
            "log": {"level": log_level, "format": "json"},
            "http": {"enabled": False},
            "pipeline": {"drain_timeout": "10s", "flush_interval": "0.5s"},
            "sources": [self._source_settings(token_file)],
            "detections": {"learning_period": "20h"},
            "sinks": [sink.settings],
        }
        path = self.workdir / "bbaudit.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.process = PipelineProcess(path, self.workdir / "bbaudit.log")
        return path

    def _source_settings(self, token_file: Path) -> dict[str, Any]:
        hours = int(self.world_days * 24 + 2)
        return {
            "kind": "dc_rest",
            "name": "dc-rest",
            "instance": self.world.instance,
            "base_url": self.sim.base_url,
            "auth": {"token_file": str(token_file)},
            "collector_account": COLLECTOR_ACCOUNT,
            "lookback": f"{hours}h",
            "settle_lag": 0,
            "poll_interval": "1s",
            "limit": 100,
            "request_timeout": "2s",
            "request_deadline": "5s",
            "max_page_retries": 3,
            "backoff_cap": "2s",
            **self.source_tuning,
        }

    @property
    def world_days(self) -> float:
        """Days the world spans."""
        return (self.world.end - self.world.start).total_seconds() / 86400

    @property
    def pipeline(self) -> PipelineProcess:
        """The pipeline process (after ``configure``)."""
        assert self.process is not None
        return self.process

    # what is where ---------------------------------------------------------

    def served_ids(self) -> set[str]:
        """Ids the simulator answered in a good response, own searches left out."""
        served = [e for e in self.sim.served_dc_events() if not own_search(e)]
        return dc_ids(served, self.world.instance)

    def expected_ids(self) -> set[str]:
        """Ids of every visible DC event the collector should hold in the end."""
        visible = [e for e in self.sim.visible_dc_events() if not own_search(e)]
        return dc_ids(visible, self.world.instance)

    def delivered(self) -> list[str]:
        """Every id in the sink, duplicates included."""
        assert self.sink is not None
        return self.sink.read_ids()

    def wait_complete(self, timeout: float, poll_s: float = 0.2) -> float | None:
        """Seconds until the sink holds every expected id, None on timeout."""
        started = time.monotonic()
        expected = self.expected_ids()
        while time.monotonic() - started < timeout:
            if expected <= set(self.delivered()):
                return time.monotonic() - started
            time.sleep(poll_s)
        return None

    def wait_delivered(self, count: int, timeout: float) -> bool:
        """Wait until the sink holds at least ``count`` records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.delivered()) >= count:
                return True
            time.sleep(0.05)
        return False

    def result(self, name: str, recover_s: float | None, notes: str = "") -> RowResult:
        """Compare sink and simulator; the report row."""
        assert self.sink is not None
        delivered = self.delivered()
        distinct = set(delivered)
        served = self.served_ids()
        expected = self.expected_ids()
        corrupt = self.sink.corrupt_lines()
        if corrupt:
            notes = f"{notes}; {corrupt} corrupt lines".lstrip("; ")
        return RowResult(
            name=name,
            sink=self.sink.kind,
            served=len(served),
            delivered=len(distinct),
            duplicated=len(delivered) - len(distinct),
            lost=len(served - distinct),
            unserved=len(expected - distinct - served),
            recover_s=recover_s,
            notes=notes,
            extra_ids=len(distinct - expected),
        )

    def log_lines(self) -> list[str]:
        """Every line the pipeline wrote in this row."""
        if self.process is None or not self.process.log_path.exists():
            return []
        return self.process.log_path.read_text(errors="replace").splitlines()

    def leaked_secrets(self) -> list[str]:
        """Log lines that carry any token used in this row (must be empty)."""
        return [
            line
            for line in self.log_lines()
            if any(s and s in line for s in self.secrets_used)
        ]

    def log_events(self) -> Counter[str]:
        """How many times each ``log_event`` appears in the pipeline's log."""
        counts: Counter[str] = Counter()
        for line in self.log_lines():
            try:
                counts[str(orjson.loads(line).get("log_event"))] += 1
            except (orjson.JSONDecodeError, AttributeError):
                counts["<not json>"] += 1
        return counts


def seeded_kill_delays(
    seed: int, count: int, low: float, high: float
) -> Iterator[float]:
    """Reproducible random moments (seconds after start) to SIGKILL at."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.uniform(low, high)


def make_world(scale: Scale, seed: int = 8) -> World:
    """The generated organisation every row reads (ending now)."""
    return build_world(seed, users=scale.users, days=scale.days)


def render_report(rows: list[RowResult], scale: Scale, elapsed_s: float) -> str:
    """The markdown report (docs/faults.md)."""
    lines = [
        "# Fault report",
        "",
        "Generated by `tests/faults` (the fault harness) from a real run: the",
        "`bbaudit run` subprocess against the Bitbucket simulator and real local",
        "receivers, broken on purpose. Regenerate with `make faults` (long form)",
        "or `BBAUDIT_FAULTS_REPORT=docs/faults.md .venv/bin/pytest tests/faults`.",
        "",
        f"Form: **{scale.name}** ({scale.kills} kills, {scale.outage_s:g} s outages,",
        f"{scale.fault_s:g} s source-fault phases, a world of {scale.users} people",
        f"over {scale.days:g} days); harness time {elapsed_s:.0f} s.",
        "",
        "- *served*: distinct DC audit event ids the simulator answered in a good",
        "  response (the collector's own audit searches left out, as it filters them).",
        "- *delivered*: distinct ids in the sink; *duplicated*: records beyond the",
        "  first per id; *lost*: served but not delivered (must be 0).",
        "- *never served*: visible events the simulator never answered in a good",
        "  response and that are not in the sink (a poison window the source skipped).",
        "- *recover s*: from the end of the fault to the sink holding every event.",
        "  The sink-outage rows feed a receiver that takes 0.2 s per 10-record",
        "  request (so the outage lands mid-stream); their recovery time is mostly",
        "  that deliberate trickle of the rest of the log, not waiting on retries.",
        "- Every row also scans every log line the pipeline wrote for the tokens",
        "  in use (Bitbucket and HEC); a row fails if one appears.",
        "",
        "| " + " | ".join(REPORT_HEADER) + " |",
        "|" + "|".join(" --- " for _ in REPORT_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines += ["", *DUPLICATES_NOTE, ""]
    return "\n".join(lines)


DUPLICATES_NOTE = [
    "## Why duplicates happen, and their bound",
    "",
    "Delivery is at-least-once. A checkpoint (and the dedupe set) is committed",
    "only after every sink has acknowledged a batch, so a SIGKILL between a sink",
    "taking a batch and that commit re-reads and re-sends what was in flight.",
    "The bound per kill is what can be in flight: the sink's queue and current",
    "batch (`queue_max_batches` x `batch_max_records`) plus the source page being",
    "processed, plus the acknowledged batches whose grouped commit had not landed",
    "yet (at most `pipeline.commit_interval`, 0.5 s, or `commit_max_ids`). A sink",
    "that times out after it did accept a batch (slow sink) gets that batch",
    "again on retry. Either way the SIEM sees the same `event.id` twice and can",
    "drop the copy; nothing is ever missing.",
    "",
    "## Soak",
    "",
    "`python -m tests.faults.soak_kill --kills 15 --sink file` (or `--sink relp`,",
    "against a hostile RELP mock) SIGKILLs `bbaudit run` at random moments",
    "against the simulator, restarts it, ends with one `--once` run and prints",
    "`served`, `delivered`, `dup` and `lost` (must be 0).",
]


def reset_dir(path: Path) -> None:
    """Empty ``path`` (created if missing)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def assert_row(bench: FaultBench, row: RowResult) -> None:
    """What every row must show: nothing lost, nothing foreign, no secret logged."""
    assert row.lost == 0, row
    assert row.extra_ids == 0, row
    assert row.served > 0, row
    assert not bench.leaked_secrets()

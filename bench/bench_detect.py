"""Cost per audit event of the full detection rule set (built-in + SigmaHQ).

Run: ``.venv/bin/python bench/bench_detect.py [events]``. Feeds a mix shaped
like a busy instance (git operations from the access log, logins with geo,
audit records of both Data Center shapes) through the engine's synchronous
core and prints microseconds per event. State stays in memory; the last line
times one flush to a temporary StateStore.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.model import Actor, AuditEvent, Target
from collector.normalize.dc import normalize_dc
from collector.state import StateStore
from detections.engine import DetectionEngine
from detections.settings import EngineSettings

REPEATS = 3
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
USERS = [f"user{i}" for i in range(400)]
CITIES = [
    ("DE", "Berlin", 52.52, 13.40, 3320),
    ("US", "Boston", 42.36, -71.06, 7922),
    ("IN", "Pune", 18.52, 73.86, 9829),
]
DC_ACTIONS = [
    ("Authentication", "User login failed"),
    ("Permissions", "Global permission granted"),
    ("Auditing", "Audit log configuration updated"),
    ("Users and groups", "User added to user group"),
    ("Repositories", "Repository created"),
]


def make_events(n: int, rng: random.Random) -> list[AuditEvent]:
    """A reproducible mix: 60% git, 25% logins, 15% audit records."""
    events = []
    for i in range(n):
        at = T0 + timedelta(milliseconds=200 * i)
        roll = rng.random()
        if roll < 0.60:
            events.append(_git(i, at, rng))
        elif roll < 0.85:
            events.append(_login(i, at, rng))
        else:
            events.append(_audit(i, at, rng))
    return events


def _geo(home: int, rng: random.Random) -> dict[str, object]:
    # Users stay in their home city; one login in 500 roams.
    roam = rng.random() < 0.002
    iso, city, lat, lon, asn = CITIES[rng.randrange(3) if roam else home % 3]
    return {
        "scope": "public",
        "country_iso": iso,
        "city": city,
        "latitude": lat,
        "longitude": lon,
        "asn": asn,
    }


def _git(i: int, at: datetime, rng: random.Random) -> AuditEvent:
    u = rng.randrange(len(USERS))
    return AuditEvent(
        id=f"g{i}",
        time=at,
        platform="dc",
        instance="bench",
        source_kind="access_log",
        action=rng.choice(("repo.cloned", "repo.fetched", "repo.pushed")),
        category="repository",
        actor=Actor(name=USERS[u], kind="human"),
        targets=(Target("REPOSITORY", f"P{rng.randrange(20)}/r{rng.randrange(300)}"),),
        source_ip=f"10.1.{u % 256}.{rng.randrange(2)}",
        context={"zones": ["office"], "geo": {"scope": "private"}},
    )


def _login(i: int, at: datetime, rng: random.Random) -> AuditEvent:
    u = rng.randrange(len(USERS))
    office = rng.random() < 0.7
    ip = f"10.1.{u % 256}.{rng.randrange(2)}" if office else f"198.51.{u % 256}.7"
    return AuditEvent(
        id=f"l{i}",
        time=at,
        platform="dc",
        instance="bench",
        source_kind="rest",
        action="auth.login",
        category="authentication",
        actor=Actor(name=USERS[u], kind="human"),
        source_ip=ip,
        context={
            "zones": ["office"] if office else rng.choice((["vpn"], ["vpn"], [])),
            "geo": {"scope": "private"} if office else _geo(u, rng),
            "identity": {"status": "active"},
        },
    )


def _audit(i: int, at: datetime, rng: random.Random) -> AuditEvent:
    category, action = rng.choice(DC_ACTIONS)
    shape = "auditType" if i % 2 else "type"
    record = {
        shape: {"category": category, "action": action},
        "author": {"id": "2", "name": rng.choice(USERS), "type": "NORMAL"},
        "affectedObjects": [{"name": "PROJ", "type": "PROJECT"}],
        "extraAttributes": [{"name": "Permission", "value": "REPO_READ"}],
        "source": "10.0.0.5",
        "timestamp": {"epochSecond": int(at.timestamp()), "nano": i},
    }
    return normalize_dc(record, instance="bench", source_kind="bench")


def main() -> None:
    """Time the engine over the mix and print the cost per event."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    events = make_events(n, random.Random(7))
    runs = []
    for _ in range(REPEATS):
        engine, alerts, elapsed = _run(events)
        runs.append(elapsed)

    best = min(runs)
    print(f"rules: {len(engine.metas)} ({len(engine.sigma)} Sigma)  events: {n}")
    print(f"alerts: {alerts}  runs: {', '.join(f'{r / n * 1e6:.2f}' for r in runs)}")
    rate = f"{n / best:,.0f} events/s"
    print(f"detect: {best / n * 1e6:.2f} us/event best of {REPEATS}  ({rate})")
    _time_flush(engine)


def _run(events: list[AuditEvent]) -> tuple[DetectionEngine, int, float]:
    engine = DetectionEngine(EngineSettings(learning_period=3600.0))
    alerts = 0
    start = time.perf_counter()
    for event in events:
        alerts += len(engine.process(event))
    return engine, alerts, time.perf_counter() - start


def _time_flush(engine: DetectionEngine) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp) / "state.sqlite")
        start = time.perf_counter()
        keys = engine.state.flush(store)
        elapsed = time.perf_counter() - start
        store.close()
    print(f"flush: {keys} keys in {elapsed * 1000:.0f} ms")


if __name__ == "__main__":
    main()

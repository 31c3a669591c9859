"""The engine: deterministic alert ids, state across restarts, lateness, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from collector.metrics import Metrics
from collector.model import Actor, Alert, AuditEvent, Target
from collector.normalize.dc import normalize_dc
from collector.plugins import DETECTORS, Runtime
from collector.state import StateStore
from detections.engine import DetectionEngine
from detections.settings import EngineSettings
from detections.state import SlidingWindows
from tests.conftest import SAMPLES

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
FIXTURES = SAMPLES


def _clone(i: int, repo: str, *, seconds: int | None = None) -> AuditEvent:
    return AuditEvent(
        id=f"clone-{i}",
        time=T0 + timedelta(seconds=10 * i if seconds is None else seconds),
        platform="dc",
        instance="test",
        source_kind="access_log",
        action="repo.cloned",
        category="repository",
        actor=Actor(name="mallory", kind="human"),
        targets=(Target("REPOSITORY", repo),),
        source_ip="203.0.113.50",
    )


def _clones(n: int) -> list[AuditEvent]:
    return [_clone(i, f"P/repo-{i}") for i in range(n)]


def _settings(**extra: object) -> EngineSettings:
    return EngineSettings.model_validate({"sigma_builtin": False, **extra})


async def _run(engine: DetectionEngine, events: list[AuditEvent]) -> list[Alert]:
    await engine.start()
    alerts = await engine.detect(events)
    await engine.aclose()
    return alerts


async def test_replay_yields_the_same_alert_ids() -> None:
    """Two fresh engines fed the same input raise alerts with the same ids."""
    first = await _run(DetectionEngine(_settings()), _clones(30))
    second = await _run(DetectionEngine(_settings()), _clones(30))

    assert [a.id for a in first] == [a.id for a in second]
    assert [a.rule_id for a in first] == ["bb.mass_clone"]
    assert first[0].evidence[0] == "clone-0"


async def test_window_state_survives_a_restart(tmp_path: Path) -> None:
    """Half the clones, a close and reopen of the store, the rest: the rule fires."""
    path = tmp_path / "state.sqlite"
    events = _clones(26)

    store = StateStore(path)
    engine = DetectionEngine(_settings(), store)
    assert await _run(engine, events[:13]) == []
    store.close()

    store = StateStore(path)
    alerts = await _run(DetectionEngine(_settings(), store), events[13:])
    store.close()

    assert [a.rule_id for a in alerts] == ["bb.mass_clone"]
    assert alerts[0].evidence[0] == "clone-0"


async def test_baselines_survive_a_restart(tmp_path: Path) -> None:
    """A learned IP is still known after a restart; a new one alerts."""
    settings = _settings(learning_period="1h")
    path = tmp_path / "state.sqlite"
    seen = _login("a", 0, "10.0.0.1")

    store = StateStore(path)
    await _run(DetectionEngine(settings, store), [seen])
    store.close()

    store = StateStore(path)
    later = [_login("b", 7200, "10.0.0.1"), _login("c", 7300, "198.51.100.7")]
    alerts = await _run(DetectionEngine(settings, store), later)
    store.close()

    assert [a.rule_id for a in alerts] == ["bb.new_source_ip"]
    assert alerts[0].evidence == ("c",)


def _login(event_id: str, seconds: int, ip: str) -> AuditEvent:
    return AuditEvent(
        id=event_id,
        time=T0 + timedelta(seconds=seconds),
        platform="dc",
        instance="test",
        source_kind="rest",
        action="auth.login",
        category="authentication",
        actor=Actor(name="alice", kind="human"),
        source_ip=ip,
    )


async def test_late_events_within_lateness_still_count() -> None:
    """A clone arriving a minute late is counted; one far behind is not."""
    events = _clones(24)
    late = _clone(100, "P/late", seconds=24 * 10 - 60)
    too_late = _clone(101, "P/too-late", seconds=-3600)

    engine = DetectionEngine(_settings(allowed_lateness="5m"))
    assert await _run(engine, [*events, too_late]) == []

    engine = DetectionEngine(_settings(allowed_lateness="5m"))
    alerts = await _run(engine, [*events, late])
    assert [a.rule_id for a in alerts] == ["bb.mass_clone"]


async def test_suppression_holds_back_repeats() -> None:
    """After a mass-clone alert, more clones in the window raise nothing new."""
    alerts = await _run(DetectionEngine(_settings()), _clones(50))

    assert len([a for a in alerts if a.rule_id == "bb.mass_clone"]) == 1


def test_windows_stay_under_the_key_cap() -> None:
    """More keys than the cap evict the oldest instead of growing."""
    windows = SlidingWindows("w", ttl_s=60.0, max_keys=100)
    for i in range(1000):
        windows.add(f"k{i}", float(i), "v", "e", span_s=60.0, lateness_s=0.0)

    assert len(windows.values) <= 100
    assert "k999" in windows.values


async def test_alert_carries_actor_ip_geo_and_techniques() -> None:
    """Alerts name the actor, source IP, geo and ATT&CK techniques."""
    events = _clones(25)
    for event in events:
        event.context["geo"] = {"country_iso": "NL", "asn": 14061}

    alerts = await _run(DetectionEngine(_settings()), events)

    alert = alerts[0]
    assert (alert.actor, alert.source_ip) == ("mallory", "203.0.113.50")
    assert alert.geo == {"country_iso": "NL", "asn": 14061}
    assert "T1213.003" in alert.techniques
    assert len(alert.evidence) == 25


async def test_registered_engine_builds_from_runtime(tmp_path: Path) -> None:
    """The ``engine`` detector kind builds from its settings and the runtime."""
    plugin = DETECTORS.get("engine", "detections.kind")
    settings = plugin.settings.model_validate({"kind": "engine"})
    store = StateStore(tmp_path / "s.sqlite")
    runtime = Runtime(state_dir=tmp_path, store=store, metrics=Metrics())

    detector = plugin.factory(settings, runtime)
    await detector.start()
    alerts = await detector.detect(_clones(25))
    await detector.aclose()
    await detector.aclose()
    store.close()

    assert [a.rule_id for a in alerts] == ["bb.mass_clone"]


async def test_disabled_engine_raises_nothing() -> None:
    """With ``enabled: false`` the engine returns no alerts."""
    alerts = await _run(DetectionEngine(_settings(enabled=False)), _clones(30))

    assert alerts == []


async def test_malformed_context_is_logged_not_fatal() -> None:
    """A geo block of the wrong type skips the rule for that event only."""
    bad = _login("bad", 0, "198.51.100.1")
    bad.context["geo"] = "not a mapping"
    bad.context["zones"] = 42
    good = _clones(25)

    alerts = await _run(DetectionEngine(_settings()), [bad, *good])

    assert [a.rule_id for a in alerts] == ["bb.mass_clone"]


async def test_shared_fixtures_raise_the_expected_alerts() -> None:
    """The public DC fixtures (both shapes) raise escalation and Sigma alerts."""
    events = []
    for name in ("audit_file_lines", "rest_api_entities"):
        path = FIXTURES / f"elastic_bitbucket_dc_{name}.ndjson"
        for line in path.read_text(encoding="utf-8").splitlines():
            record = orjson.loads(line)
            events.append(normalize_dc(record, instance="x", source_kind=name))
    events.sort(key=lambda e: e.time)

    alerts = await _run(DetectionEngine(_settings(sigma_builtin=True)), events)
    rules = {a.rule_id for a in alerts}

    assert "bb.permission_escalation" in rules
    assert "6aa12161-235a-4dfb-9c74-fe08df8d8da1" in rules  # audit config, any case
    assert "aac6c4f4-87c7-4961-96ac-c3fd3a42c310" in rules  # global permission
    sigma = next(a for a in alerts if a.rule_id.startswith("6aa12161"))
    assert sigma.rule_author and sigma.references


def _failed_login(n: int, tried: str, minute: int) -> AuditEvent:
    """A DC "User login failed" line: the author is Anonymous, the tried name
    is the legacy ``target`` attribute."""
    line = (SAMPLES / "elastic_bitbucket_dc_audit_file_lines.ndjson").read_text()
    record = orjson.loads(line.splitlines()[15])
    record["extraAttributes"][-1]["value"] = tried
    record["timestamp"] = {"epochSecond": 1_780_000_000 + 60 * minute, "nano": n}
    return normalize_dc(record, instance="test", source_kind="dc_file")


async def test_sigma_failed_login_alerts_per_tried_user_not_per_anonymous() -> None:
    """One user's failed login does not silence the Sigma rule for another user."""
    events = [
        _failed_login(1, "nobody", 0),
        _failed_login(2, "priya.hall", 40),
        _failed_login(3, "priya.hall", 41),
    ]
    engine = DetectionEngine(EngineSettings.model_validate({"sigma_builtin": True}))

    alerts = await _run(engine, events)
    sigma = [a for a in alerts if a.rule_id == "70ed1d26-0050-4b38-a599-92c53d57d45a"]

    assert [a.actor for a in sigma] == ["nobody", "priya.hall"]

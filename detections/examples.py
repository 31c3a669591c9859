"""Example audit events shipped beside the rules, and how to run them.

Each ``rules/examples/*.yml`` file holds ``cases``; a case names the rule it
exercises (``rule``, or the file's), whether it ``fires``, optional engine
``settings`` and an expected ``severity``, and its ``events``. An event is
either a raw Data Center record under ``dc`` (normalized with
``collector.normalize.dc``) or a normalized event in short form (``action``,
``actor``, ``targets: [[TYPE, name]]``, ``changes: [[key, old, new]]``,
``attributes``, ``context``, ``source_ip``, ``platform``). ``at`` offsets an
event from the case start (default: one second after the previous one);
``repeat``/``every`` expand a template whose strings may use ``{i}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from collector.model import Actor, AuditEvent, Change, Target
from collector.normalize.dc import normalize_dc
from collector.settings_types import parse_duration

EXAMPLES_DIR = Path(__file__).parent / "rules" / "examples"
CASE_START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ExampleCase:
    """One example: events and what the rule should do with them."""

    rule: str
    name: str
    fires: bool
    events: tuple[AuditEvent, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    severity: str | None = None
    alerts: int | None = None
    source: str = ""


def load_examples(directory: Path = EXAMPLES_DIR) -> list[ExampleCase]:
    """Every case of every examples file under ``directory``, in file order."""
    cases: list[ExampleCase] = []
    for path in sorted(directory.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for index, raw in enumerate(doc["cases"]):
            cases.append(_case(doc, raw, f"{path.name}#{index}"))
    return cases


def _case(doc: Mapping[str, Any], raw: Mapping[str, Any], source: str) -> ExampleCase:
    settings = {**doc.get("settings", {}), **raw.get("settings", {})}
    return ExampleCase(
        rule=raw.get("rule") or doc["rule"],
        name=raw["name"],
        fires=bool(raw["fires"]),
        events=tuple(build_events(raw["events"], source)),
        settings=settings,
        severity=raw.get("severity"),
        alerts=raw.get("alerts"),
        source=source,
    )


def build_events(specs: list[Mapping[str, Any]], seed: str) -> list[AuditEvent]:
    """Audit events from event specs (see the module docstring)."""
    events: list[AuditEvent] = []
    moment = CASE_START - timedelta(seconds=1)
    for spec in specs:
        if "repeat" in spec:
            step = timedelta(seconds=parse_duration(spec.get("every", "1s")))
            for i in range(int(spec["repeat"])):
                moment += step if i else timedelta(seconds=1)
                template = _fill(spec["event"], i)
                events.append(_event(template, moment, f"{seed}/{len(events)}"))
            continue
        if "at" in spec:
            moment = CASE_START + timedelta(seconds=parse_duration(spec["at"]))
        else:
            moment += timedelta(seconds=1)
        events.append(_event(spec, moment, f"{seed}/{len(events)}"))
    return events


def _fill(value: Any, i: int) -> Any:
    if isinstance(value, str):
        return value.replace("{i}", str(i))
    if isinstance(value, Mapping):
        return {k: _fill(v, i) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, i) for v in value]
    return value


def _event(spec: Mapping[str, Any], moment: datetime, seed: str) -> AuditEvent:
    if "dc" in spec:
        record = dict(spec["dc"])
        record["timestamp"] = {"epochSecond": int(moment.timestamp()), "nano": 0}
        event = normalize_dc(record, instance="example", source_kind="example")
        return replace(event, context=dict(spec.get("context", {})))

    actor_name = spec.get("actor")
    return AuditEvent(
        id=hashlib.sha256(seed.encode()).hexdigest()[:24],
        time=moment,
        platform=spec.get("platform", "dc"),
        instance="example",
        source_kind="example",
        action=spec["action"],
        category=spec["action"].split(".")[0],
        raw_action=spec.get("raw_action"),
        actor=Actor(
            name=actor_name,
            kind=spec.get("actor_kind", "human" if actor_name else "unknown"),
        ),
        targets=tuple(Target(type=t, name=n) for t, n in spec.get("targets", ())),
        source_ip=spec.get("source_ip"),
        changes=tuple(Change(k, o, n) for k, o, n in spec.get("changes", ())),
        attributes=dict(spec.get("attributes", {})),
        context=dict(spec.get("context", {})),
    )

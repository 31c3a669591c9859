"""ECS and OCSF documents for the sample Bitbucket DC events and for alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from collector.model import Alert, AuditEvent
from collector.normalize.dc import normalize_dc
from sinks.render import render
from sinks.render.fields import iso_time
from tests.conftest import SAMPLES

DATA = SAMPLES
ECS_CATEGORIES = {
    "api", "authentication", "configuration", "database", "driver", "email", "file",
    "host", "iam", "intrusion_detection", "library", "malware", "network", "package",
    "process", "registry", "session", "threat", "vulnerability", "web",
}  # fmt: skip
ECS_TYPES = {
    "access", "admin", "allowed", "change", "connection", "creation", "deletion",
    "denied", "end", "error", "group", "indicator", "info", "installation",
    "protocol", "start", "user",
}  # fmt: skip
CONTEXT: dict[str, Any] = {
    "identity": {
        "matched_by": "username",
        "directory": "corp-ad",
        "username": "admin",
        "email": "admin@example.com",
        "display_name": "Ada Admin",
        "status": "active",
        "groups": ["eng", "admins"],
        "human": True,
    },
    "geo": {
        "scope": "public",
        "country_iso": "DE",
        "country": "Germany",
        "city": "Berlin",
        "latitude": 52.5,
        "longitude": 13.4,
        "asn": 64500,
        "as_org": "Example Net",
    },
    "zones": ["vpn"],
    "repo": {"project": "PRJ", "repository": "app", "tags": ["pci"]},
}


def sample_events() -> list[AuditEvent]:
    """Every DC sample record (file lines and REST entities), normalized."""
    events = []
    for name in (
        "elastic_bitbucket_dc_audit_file_lines.ndjson",
        "elastic_bitbucket_dc_rest_api_entities.ndjson",
    ):
        for line in (DATA / name).read_text().splitlines():
            if line.strip():
                record = orjson.loads(line)
                events.append(normalize_dc(record, instance="bb", source_kind="dc"))
    return events


def first(action: str) -> AuditEvent:
    """The first sample event with this normalized action."""
    return next(e for e in sample_events() if e.action == action)


def make_alert() -> Alert:
    """An alert with actor, source and geo."""
    return Alert(
        id="al-1",
        rule_id="impossible_travel",
        rule_name="Impossible travel",
        severity="high",
        risk_score=73,
        time=datetime(2026, 5, 1, tzinfo=UTC),
        summary="admin seen in Berlin and Sydney within 10 minutes",
        key="admin",
        evidence=("ev-1", "ev-2"),
        techniques=("T1078",),
        actor="admin",
        source_ip="203.0.113.9",
        geo={"country_iso": "AU", "city": "Sydney"},
        references=("https://attack.mitre.org/techniques/T1078/",),
    )


def test_samples_are_present() -> None:
    """The shared sample data is there (the other tests depend on it)."""
    assert len(sample_events()) > 40


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.action)
def test_ecs_uses_allowed_category_and_type(event: AuditEvent) -> None:
    """Every sample event gets ECS-allowed event.category and event.type values."""
    document = render(event, "ecs")

    assert set(document["event"]["category"]) <= ECS_CATEGORIES
    assert set(document["event"]["type"]) <= ECS_TYPES
    assert document["@timestamp"].endswith("Z")
    assert document["event"]["id"] == event.id
    orjson.dumps(document)


def test_ecs_maps_enrichment_context() -> None:
    """Identity, geo, zones and repository context land in their ECS fields."""
    event = first("permission.granted")
    event.context.update(CONTEXT)

    document = render(event, "ecs")

    assert document["user"]["email"] == "admin@example.com"
    assert document["user"]["full_name"] == "Ada Admin"
    assert document["user"]["domain"] == "corp-ad"
    assert document["user"]["roles"] == ["eng", "admins"]
    geo = document["source"]["geo"]
    assert geo["country_iso_code"] == "DE"
    assert geo["location"] == {"lat": 52.5, "lon": 13.4}
    assert document["source"]["as"] == {
        "number": 64500,
        "organization": {"name": "Example Net"},
    }
    assert document["bbaudit"]["network"]["zones"] == ["vpn"]
    assert document["bbaudit"]["repo"]["tags"] == ["pci"]
    assert "admin@example.com" in document["related"]["user"]
    assert document["event"]["category"] == ["iam"]


def test_ecs_auth_failure_is_authentication_start_failure() -> None:
    """A failed login is category authentication, type start, outcome failure."""
    document = render(first("auth.login_failed"), "ecs")

    assert document["event"]["category"] == ["authentication"]
    assert document["event"]["type"] == ["start"]
    assert document["event"]["outcome"] == "failure"


def test_ecs_original_is_the_raw_record_as_json() -> None:
    """With original on, event.original holds the raw record."""
    event = first("user.created")

    document = render(event, "ecs", original=True)

    assert orjson.loads(document["event"]["original"]) == dict(event.raw)
    assert "original" not in render(event, "ecs")["event"]


@pytest.mark.parametrize(
    ("action", "class_uid", "activity_id"),
    [
        ("auth.login", 3002, 1),
        ("auth.logout", 3002, 2),
        ("user.created", 3001, 1),
        ("user.deleted", 3001, 6),
        ("user.password_changed", 3001, 3),
        ("token.created", 3001, 1),
        ("group.member_added", 3006, 3),
        ("group.member_removed", 3006, 4),
        ("permission.granted", 3005, 1),
        ("permission.revoked", 3005, 2),
        ("repo.created", 6003, 1),
        ("repo.deleted", 6003, 4),
        ("audit.searched", 6003, 2),
    ],
)
def test_ocsf_class_and_activity(action: str, class_uid: int, activity_id: int) -> None:
    """Each kind of action maps to its OCSF class and activity."""
    document = render(first(action), "ocsf")

    assert document["class_uid"] == class_uid
    assert document["activity_id"] == activity_id
    assert document["type_uid"] == class_uid * 100 + activity_id
    assert document["metadata"]["product"]["vendor_name"] == "Atlassian"
    assert isinstance(document["time"], int)


def test_ocsf_actor_endpoint_and_observables() -> None:
    """OCSF carries the actor, source endpoint with location and observables."""
    event = first("permission.granted")
    event.context.update(CONTEXT)

    document = render(event, "ocsf", original=True)

    assert document["actor"]["user"]["full_name"] == "Ada Admin"
    assert document["src_endpoint"]["location"]["country"] == "DE"
    assert document["src_endpoint"]["autonomous_system"]["number"] == 64500
    names = {o["name"] for o in document["observables"]}
    assert {"actor.user.name", "src_endpoint.ip"} <= names
    assert orjson.loads(document["raw_data"]) == dict(event.raw)


def test_ecs_alert_has_rule_threat_and_scores() -> None:
    """An alert renders as ECS event.kind alert with rule, technique and scores."""
    document = render(make_alert(), "ecs")

    assert document["event"]["kind"] == "alert"
    assert document["event"]["severity"] == 73
    assert document["event"]["risk_score"] == 73.0
    assert document["rule"]["id"] == "impossible_travel"
    assert document["threat"]["technique"] == [{"id": "T1078"}]
    assert document["source"]["geo"]["city_name"] == "Sydney"
    assert document["related"] == {"user": ["admin"], "ip": ["203.0.113.9"]}


def test_ocsf_alert_is_detection_finding() -> None:
    """An alert renders as an OCSF Detection Finding with severity and evidence."""
    document = render(make_alert(), "ocsf")

    assert document["class_uid"] == 2004
    assert document["type_uid"] == 200401
    assert document["severity_id"] == 4
    assert document["finding_info"]["attacks"] == [{"technique": {"uid": "T1078"}}]
    assert [e["uid"] for e in document["finding_info"]["related_events"]] == [
        "ev-1",
        "ev-2",
    ]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 5, 5, 7, 8, 9, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 5, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 5, 123456, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone(timedelta(seconds=30))),
        datetime(2026, 3, 1, 12, 0, 5),
    ],
)
def test_iso_time_writes_what_isoformat_writes(moment: datetime) -> None:
    """The fast UTC path gives isoformat's text with Z; other zones keep theirs."""
    assert iso_time(moment) == moment.isoformat().replace("+00:00", "Z")

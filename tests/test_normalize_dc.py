"""The Data Center normalizer: both shapes, the action vocabulary, stable ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.actions import classify_dc, known_actions
from collector.normalize.dc import detect_dc_shape, normalize_dc
from tests.conftest import SAMPLES


def _lines(name: str) -> list[dict[str, Any]]:
    path: Path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"shared sample {name} is not present")
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def _rest_entity(**overrides: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "timestamp": "2026-03-02T10:00:00.123Z",
        "author": {"name": "jdoe", "type": "NORMAL", "id": "42"},
        "type": {
            "action": "Global permission granted",
            "actionI18nKey": (
                "bitbucket.service.user.audit.action.globalpermissiongranted"
            ),
            "category": "Permissions",
        },
        "affectedObjects": [{"name": "jdoe", "type": "USER", "id": "42"}],
        "changedValues": [],
        "extraAttributes": [
            {
                "name": "details",
                "nameI18nKey": "bitbucket.audit.attribute.legacy.details",
                "value": '{"permission":"SYS_ADMIN","user":"jdoe"}',
            }
        ],
        "source": "10.1.2.3",
        "system": "https://bitbucket.example.test",
        "node": "node-1",
        "method": "Browser",
    }
    entity.update(overrides)
    return entity


def _as_file_line(
    entity: dict[str, Any], epoch_second: int, nano: int
) -> dict[str, Any]:
    line = {k: v for k, v in entity.items() if k not in {"type", "timestamp"}}
    line["auditType"] = {**entity["type"], "area": "PERMISSIONS", "level": "BASE"}
    line["timestamp"] = {"epochSecond": epoch_second, "nano": nano}
    line["version"] = "1.0"
    return line


def test_rest_entity_is_normalized() -> None:
    """A REST entity becomes an event with the normalized action and its details."""
    event = normalize_dc(_rest_entity(), instance="dc", source_kind="dc_rest")

    assert event.action == "permission.granted"
    assert event.category == "permission"
    assert event.actor.name == "jdoe"
    assert event.actor.kind == "human"
    assert event.attributes["details.permission"] == "SYS_ADMIN"
    assert event.source_ip == "10.1.2.3"
    assert event.time.isoformat() == "2026-03-02T10:00:00.123000+00:00"


def test_rest_and_file_shapes_of_one_event_share_an_id() -> None:
    """The same record read from the API and from the audit file is one event."""
    entity = _rest_entity()
    line = _as_file_line(entity, 1772445600, 123_000_000)

    rest = normalize_dc(entity, instance="dc", source_kind="dc_rest")
    file = normalize_dc(line, instance="dc", source_kind="dc_file")

    assert rest.id == file.id
    assert detect_dc_shape(entity) == "rest"
    assert detect_dc_shape(line) == "file"


def test_same_millisecond_events_get_distinct_ids() -> None:
    """Events in one millisecond that differ only in changedValues stay apart."""
    first = _rest_entity(changedValues=[{"key": "a", "from": "1", "to": "2"}])
    second = _rest_entity(changedValues=[{"key": "b", "from": "1", "to": "2"}])

    ids = {normalize_dc(e, instance="dc", source_kind="t").id for e in (first, second)}

    assert len(ids) == 2


def test_empty_strings_are_absent() -> None:
    """Atlassian's empty strings read as missing fields, and hash the same."""
    blank = normalize_dc(_rest_entity(source=""), instance="dc", source_kind="t")
    missing_entity = _rest_entity()
    del missing_entity["source"]
    missing = normalize_dc(missing_entity, instance="dc", source_kind="t")

    assert blank.source_ip is None
    assert blank.id == missing.id


def test_instance_is_part_of_the_id() -> None:
    """Two Bitbucket instances never share an event id."""
    entity = _rest_entity()

    one = normalize_dc(entity, instance="a", source_kind="t")
    two = normalize_dc(entity, instance="b", source_kind="t")

    assert one.id != two.id


def test_unknown_action_passes_through_with_its_name() -> None:
    """An action bbaudit does not know keeps its raw name instead of vanishing."""
    entity = _rest_entity(
        type={"action": "Quantum flux recalibrated", "actionI18nKey": "x.y.flux"}
    )

    event = normalize_dc(entity, instance="dc", source_kind="t")

    assert event.action == "bitbucket.quantum_flux_recalibrated"
    assert event.category == "other"
    assert event.raw_action == "Quantum flux recalibrated"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"type": {"action": "x"}}, "neither"),
        (_rest_entity(timestamp=""), "timestamp"),
        (_rest_entity(timestamp="yesterday"), "ISO 8601"),
        (_rest_entity(timestamp={"epochSecond": "1", "nano": 0}), "integers"),
        (_rest_entity(timestamp={"epochSecond": 10**18, "nano": 0}), "range"),
        (_rest_entity(timestamp={"epochSecond": True, "nano": 0}), "integers"),
        (_rest_entity(timestamp="0001-01-01T00:00:00+14:00"), "range"),
        (_rest_entity(timestamp="9999-12-31T23:59:59-14:00"), "range"),
        (_rest_entity(author="not-a-mapping", source=7), None),
    ],
)
def test_bad_records_raise_value_error(
    record: dict[str, Any], reason: str | None
) -> None:
    """Unusable records raise ValueError with a reason, never anything else."""
    if reason is None:
        event = normalize_dc(record, instance="dc", source_kind="t")
        assert event.actor.kind == "unknown"
        assert event.source_ip == "7"
        return
    with pytest.raises(ValueError, match=reason):
        normalize_dc(record, instance="dc", source_kind="t")


def test_every_sample_record_normalizes() -> None:
    """All public DC samples normalize, and only known actions come out."""
    records = _lines("elastic_bitbucket_dc_rest_api_entities.ndjson")
    records += _lines("elastic_bitbucket_dc_audit_file_lines.ndjson")

    events = [normalize_dc(r, instance="dc", source_kind="t") for r in records]

    vocabulary = set(known_actions())
    assert all(e.action in vocabulary for e in events)
    assert {"auth.login_failed", "token.modified", "audit.config_changed"} <= {
        e.action for e in events
    }


def test_actor_kinds() -> None:
    """System, anonymous and access-token bot authors are told apart from people."""
    system = {"name": "System", "type": "system", "id": "-1"}
    anonymous = {"name": "Anonymous", "type": "user", "id": "-2"}
    bot = {"name": "access-token-user/2/1", "type": "NORMAL", "id": "9"}

    kinds = [
        normalize_dc(_rest_entity(author=a), instance="d", source_kind="t").actor.kind
        for a in (system, anonymous, bot)
    ]

    assert kinds == ["system", "anonymous", "bot"]


def test_classify_by_display_name_when_key_unknown() -> None:
    """Sigma-only actions without a known key are matched by their English name."""
    info = classify_dc(None, "Global secret scanning rule deleted")

    assert info.action == "secret_scanning.rule_deleted"

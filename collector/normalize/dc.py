"""Data Center audit records: REST entities (``type``), file lines (``auditType``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from collector.actions import classify_dc
from collector.ids import dc_event_id
from collector.model import Actor, ActorKind, AuditEvent, Change, Target

DcShape = Literal["rest", "file"]

_LEGACY_DETAILS = "bitbucket.audit.attribute.legacy.details"
_MAX_ATTRIBUTE_CHARS = 8192
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Audit events before 1970 or after 9999 are not real; outside this range
# datetime arithmetic overflows instead of failing cleanly.
_MAX_EPOCH_SECONDS = 253_402_300_800  # 10000-01-01T00:00:00Z


def detect_dc_shape(record: Mapping[str, Any]) -> DcShape | None:
    """Tell a REST entity from an audit-file line, or ``None`` if it is neither."""
    audit_type = record.get("auditType")
    if type(audit_type) is dict or isinstance(audit_type, Mapping):
        return "file"
    rest_type = record.get("type")
    if (type(rest_type) is dict or isinstance(rest_type, Mapping)) and (
        "timestamp" in record
    ):
        return "rest"
    return None


def normalize_dc(
    record: Mapping[str, Any], *, instance: str, source_kind: str
) -> AuditEvent:
    """Turn one DC record of either shape into an ``AuditEvent``.

    Raises ``ValueError`` when the record has no usable time or type block.
    """
    if type(record) is not dict and not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    shape = detect_dc_shape(record)
    if shape is None:
        raise ValueError("neither a REST entity ('type') nor a file line ('auditType')")

    type_block = record["auditType"] if shape == "file" else record["type"]
    time, epoch_ns = _parse_time(record.get("timestamp"))
    key = text_field(type_block.get("actionI18nKey"))
    name = text_field(type_block.get("action"))
    info = classify_dc(key, name)
    attributes = _attributes(record.get("extraAttributes"))

    return AuditEvent(
        id=dc_event_id(instance, record, epoch_ns),
        time=time,
        platform="dc",
        instance=instance,
        source_kind=source_kind,
        action=info.action,
        category=info.category,
        outcome=info.outcome,  # type: ignore[arg-type]  # vocabulary holds only Outcome values
        raw_action=name,
        action_key=key,
        raw_category=text_field(type_block.get("category")),
        actor=_actor(record.get("author"), attributes),
        targets=_targets(record.get("affectedObjects")),
        source_ip=text_field(record.get("source")),
        user_agent=None,
        changes=_changes(record.get("changedValues")),
        attributes=attributes,
        raw=record,
    )


def text_field(value: Any) -> str | None:
    """A string field, with Atlassian's empty strings treated as absent."""
    if type(value) is str:
        return value or None
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _parse_time(value: Any) -> tuple[datetime, int]:
    """(UTC time, epoch nanoseconds) from an ISO string or {epochSecond, nano}."""
    if type(value) is dict or isinstance(value, Mapping):
        seconds = value.get("epochSecond")
        nano = value.get("nano", 0) or 0
        if type(seconds) is not int or type(nano) is not int:
            raise ValueError("timestamp.epochSecond/nano must be integers")
        if not 0 <= seconds < _MAX_EPOCH_SECONDS or not 0 <= nano < 1_000_000_000:
            raise ValueError("timestamp.epochSecond/nano out of range")
        epoch_ns = seconds * 1_000_000_000 + nano
        # Same value as fromtimestamp(UTC).replace(), at half the cost.
        return _EPOCH + timedelta(seconds=seconds, microseconds=nano // 1000), (
            epoch_ns
        )

    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"timestamp {value[:40]!r} is not ISO 8601") from exc
        if parsed.tzinfo is None:
            # The API always sends an offset; a bare time is read as UTC.
            parsed = parsed.replace(tzinfo=UTC)
        try:
            parsed = parsed.astimezone(UTC)
            seconds = int(parsed.timestamp())
        except (OverflowError, OSError) as exc:
            raise ValueError(f"timestamp {value[:40]!r} is out of range") from exc
        if not 0 <= seconds < _MAX_EPOCH_SECONDS:
            raise ValueError(f"timestamp {value[:40]!r} is out of range")
        return parsed, seconds * 1_000_000_000 + parsed.microsecond * 1000

    raise ValueError("missing or empty timestamp")


def _actor(author: Any, attributes: Mapping[str, str]) -> Actor:
    if type(author) is not dict and not isinstance(author, Mapping):
        return Actor(kind="unknown")
    name = text_field(author.get("name"))
    raw_type = text_field(author.get("type"))
    actor_id = text_field(author.get("id"))
    return Actor(
        name=name,
        id=actor_id,
        kind=_actor_kind(name, raw_type, actor_id),
        raw_type=raw_type,
        auth_method=attributes.get("Authentication method"),
    )


def _actor_kind(
    name: str | None, raw_type: str | None, actor_id: str | None
) -> ActorKind:
    lowered = (raw_type or "").lower()
    if lowered == "system" or actor_id == "-1" or name == "System":
        return "system"
    if actor_id == "-2" or name == "Anonymous":
        return "anonymous"
    # Repository and project access tokens act as bot users named like
    # "access-token-user/2/1"; service accounts come with type SERVICE.
    if (name or "").startswith("access-token-user/") or lowered == "service":
        return "bot"
    if lowered in {"normal", "user"}:
        return "human"
    return "unknown"


def _targets(value: Any) -> tuple[Target, ...]:
    if not isinstance(value, list):
        return ()
    targets = []
    for item in value:
        if type(item) is not dict and not isinstance(item, Mapping):
            continue
        targets.append(
            Target(
                type=text_field(item.get("type")) or "UNKNOWN",
                name=text_field(item.get("name")),
                id=text_field(item.get("id")),
            )
        )
    return tuple(targets)


def _changes(value: Any) -> tuple[Change, ...]:
    if not isinstance(value, list):
        return ()
    changes = []
    for item in value:
        if type(item) is not dict and not isinstance(item, Mapping):
            continue
        key = (
            text_field(item.get("key")) or text_field(item.get("i18nKey")) or "unknown"
        )
        changes.append(
            Change(
                key=key,
                old=text_field(item.get("from")),
                new=text_field(item.get("to")),
            )
        )
    return tuple(changes)


def _attributes(value: Any) -> dict[str, str]:
    """extraAttributes as name -> value, with the legacy JSON details unpacked.

    The legacy details attribute holds JSON in a string
    (``{"permission":"SYS_ADMIN","user":"admin"}``); its keys become
    ``details.<key>`` so rules can read them without parsing.
    """
    if not isinstance(value, list):
        return {}
    attributes: dict[str, str] = {}
    for item in value:
        if type(item) is not dict and not isinstance(item, Mapping):
            continue
        name = text_field(item.get("name"))
        raw_value = item.get("value")
        text = raw_value if isinstance(raw_value, str) else None
        if not name or not text:
            continue
        attributes[name] = text[:_MAX_ATTRIBUTE_CHARS]
        if item.get("nameI18nKey") == _LEGACY_DETAILS:
            attributes.update(_details(text))
    return attributes


def _details(text: str) -> dict[str, str]:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    details = {}
    for key, value in parsed.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            details[f"details.{key}"] = str(value)[:_MAX_ATTRIBUTE_CHARS]
        elif isinstance(value, list):
            items = [str(v) for v in value if isinstance(v, (str, int))]
            details[f"details.{key}"] = ",".join(items)[:_MAX_ATTRIBUTE_CHARS]
    return details

"""Data Center audit records: REST entities (``type``), file lines (``auditType``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from collector.actions import ActionInfo, classify_dc
from collector.ids import dc_event_id
from collector.memo import Memo
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
    record: Mapping[str, Any], *, instance: str, source_kind: str, raw_size: int = 0
) -> AuditEvent:
    """Turn one DC record of either shape into an ``AuditEvent``; ``raw_size``
    is the record's size as read, when the source knows it.

    Raises ``ValueError`` when the record has no usable time or type block.
    """
    if type(record) is not dict and not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    shape = detect_dc_shape(record)
    if shape is None:
        raise ValueError("neither a REST entity ('type') nor a file line ('auditType')")

    get = record.get
    type_block = record["auditType"] if shape == "file" else record["type"]
    time, epoch_ns = _parse_time(get("timestamp"))
    key = text_field(type_block.get("actionI18nKey"))
    name = text_field(type_block.get("action"))
    info = _classify(key, name)
    attributes = _attributes(get("extraAttributes"))

    # Positional, in AuditEvent's field order: this runs once per event and
    # keywords cost a third more. The arguments are evaluated in the order
    # the fields are read, so a bad record fails on the same field as before.
    return AuditEvent(
        dc_event_id(instance, record, epoch_ns),  # id
        time,
        "dc",  # platform
        instance,
        source_kind,
        info.action,
        info.category,
        info.outcome,  # type: ignore[arg-type]  # vocabulary holds only Outcome values
        name,  # raw_action
        key,  # action_key
        text_field(type_block.get("category")),  # raw_category
        _actor(get("author"), attributes),
        _targets(get("affectedObjects")),
        text_field(get("source")),  # source_ip
        None,  # user_agent
        _changes(get("changedValues")),
        attributes,
        record,  # raw
        {},  # context
        raw_size,
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
        # Same value as fromtimestamp(UTC).replace(), at a third of the cost;
        # timedelta(days, seconds, microseconds) by position: keywords cost more.
        return _EPOCH + timedelta(0, seconds, nano // 1000), epoch_ns

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
    name, raw_type, actor_id = author.get("name"), author.get("type"), author.get("id")
    auth_method = attributes.get("Authentication method")
    if type(name) is not str or type(raw_type) is not str or type(actor_id) is not str:
        return _new_actor(name, raw_type, actor_id, auth_method)

    # A few hundred people write most events; an Actor is frozen, so one
    # instance serves every event of the same author. Only all-string keys
    # are cached: 1 == 1.0 == True as keys, but not as text.
    key = (name, raw_type, actor_id, auth_method)
    actor = _ACTORS.get(key)
    if actor is None:
        actor = _new_actor(name, raw_type, actor_id, auth_method)
        _ACTORS.remember(key, actor)
    return actor


def _new_actor(
    raw_name: Any, raw_type: Any, raw_id: Any, auth_method: str | None
) -> Actor:
    name = text_field(raw_name)
    kind_name = text_field(raw_type)
    actor_id = text_field(raw_id)
    kind = _actor_kind(name, kind_name, actor_id)
    return Actor(name, actor_id, None, kind, kind_name, auth_method)


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
        targets.append(_target(item.get("type"), item.get("name"), item.get("id")))
    return tuple(targets)


def _target(raw_type: Any, name: Any, target_id: Any) -> Target:
    if type(raw_type) is not str or type(name) is not str or type(target_id) is not str:
        return Target(
            text_field(raw_type) or "UNKNOWN", text_field(name), text_field(target_id)
        )

    # The same repositories, users and groups recur; Target is frozen too.
    key = (raw_type, name, target_id)
    target = _TARGETS.get(key)
    if target is None:
        target = Target(raw_type or "UNKNOWN", name or None, target_id or None)
        _TARGETS.remember(key, target)
    return target


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
            Change(key, text_field(item.get("from")), text_field(item.get("to")))
        )
    return tuple(changes)


def _classify(key: str | None, name: str | None) -> ActionInfo:
    """``classify_dc``, remembered: a DC instance uses a few hundred actions."""
    pair = (key, name)
    info = _ACTIONS.get(pair)
    if info is None:
        info = classify_dc(key, name)
        _ACTIONS.remember(pair, info)
    return info


_ACTORS: Memo[tuple[str, str, str, str | None], Actor] = Memo()
_TARGETS: Memo[tuple[str, str, str], Target] = Memo()
_ACTIONS: Memo[tuple[str | None, str | None], ActionInfo] = Memo()


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
        name = item.get("name")
        if type(name) is not str:  # the common case skips a call per item
            name = text_field(name)
        text = item.get("value")
        if not name or not text or not isinstance(text, str):
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

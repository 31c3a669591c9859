"""Stable ids for audit events that carry none (Data Center)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson


def _blank_to_none(value: Any) -> Any:
    # Atlassian sends "" where a field is absent; both must hash the same.
    return None if value == "" else value


def _items(value: Any, keys: tuple[str, ...]) -> list[list[Any]]:
    if not isinstance(value, list):
        return []
    # Inlined _blank_to_none: this runs for every record on the hot path.
    return [
        [None if (v := item.get(k)) == "" else v for k in keys]
        for item in value
        if type(item) is dict or isinstance(item, Mapping)
    ]


def dc_event_id(instance: str, record: Mapping[str, Any], epoch_ns: int) -> str:
    """Return the content hash of one DC audit record, REST or file shape.

    Same-millisecond events are normal (five "Audit Log configuration updated"
    in one ms differ only in changedValues), so every content field is in. The
    display strings are out: they may be localised. Fields that only one shape
    carries (uri, avatarUri, area, level, version) are out too, so the REST entity
    and the file line of one event give the same id.
    """
    type_block = record.get("type") or record.get("auditType") or {}
    author = record.get("author") or {}
    if not isinstance(author, Mapping):
        author = {"id": author}
    action = None
    if isinstance(type_block, Mapping):
        action = type_block.get("actionI18nKey") or type_block.get("action")

    identity = [
        _blank_to_none(record.get("system")),
        _blank_to_none(record.get("node")),
        _blank_to_none(author.get("id")),
        _blank_to_none(author.get("name")),
        action,
        epoch_ns,
        _items(record.get("affectedObjects"), ("type", "id", "name")),
        _items(record.get("changedValues"), ("i18nKey", "key", "from", "to")),
        _items(record.get("extraAttributes"), ("nameI18nKey", "name", "value")),
        _blank_to_none(record.get("source")),
        _blank_to_none(record.get("method")),
    ]

    canonical = orjson.dumps(identity)
    digest = hashlib.sha256(instance.encode() + b"\x00" + canonical).hexdigest()
    return f"dc-{digest[:32]}"

"""Stable ids for audit events that carry none (Data Center)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson


def _items(value: Any, keys: tuple[str, ...]) -> list[list[Any]]:
    """The values under ``keys`` (three or four) of each object in the list
    ``value``, with Atlassian's "" read as None."""
    if not value or not isinstance(value, list):
        return []
    first, second, third = keys[0], keys[1], keys[2]
    fourth = keys[3] if len(keys) > 3 else None
    items = []
    # Spelled out rather than a nested comprehension: this runs for every
    # record, and the inner comprehension cost a call per item (a third more).
    for item in value:
        if type(item) is not dict and not isinstance(item, Mapping):
            continue
        get = item.get
        row = [
            None if (a := get(first)) == "" else a,
            None if (b := get(second)) == "" else b,
            None if (c := get(third)) == "" else c,
        ]
        if fourth is not None:
            row.append(None if (d := get(fourth)) == "" else d)
        items.append(row)
    return items


def _prefix(instance: str) -> Any:
    """A sha256 state that has already taken ``instance`` and the separator."""
    state = _PREFIXES.get(instance)
    if state is None:
        state = hashlib.sha256(instance.encode() + b"\x00")
        if len(_PREFIXES) < _MAX_PREFIXES:
            _PREFIXES[instance] = state
    return state


# One entry per configured instance name; the cap only guards odd callers.
_PREFIXES: dict[str, Any] = {}
_MAX_PREFIXES = 256


def dc_event_id(instance: str, record: Mapping[str, Any], epoch_ns: int) -> str:
    """Return the content hash of one DC audit record, REST or file shape.

    Same-millisecond events are normal (five "Audit Log configuration updated"
    in one ms differ only in changedValues), so every content field is in. The
    display strings are out: they may be localised. Fields that only one shape
    carries (uri, avatarUri, area, level, version) are out too, so the REST entity
    and the file line of one event give the same id.
    """
    get = record.get
    type_block = get("type") or get("auditType") or {}
    author = get("author") or {}
    # type() first: an ABC isinstance check costs more than the rest of a line.
    if type(author) is not dict and not isinstance(author, Mapping):
        author = {"id": author}
    action = None
    if type(type_block) is dict or isinstance(type_block, Mapping):
        action = type_block.get("actionI18nKey") or type_block.get("action")

    # Atlassian sends "" where a field is absent; both must hash the same.
    identity = [
        None if (system := get("system")) == "" else system,
        None if (node := get("node")) == "" else node,
        None if (author_id := author.get("id")) == "" else author_id,
        None if (author_name := author.get("name")) == "" else author_name,
        action,
        epoch_ns,
        _items(get("affectedObjects"), ("type", "id", "name")),
        _items(get("changedValues"), ("i18nKey", "key", "from", "to")),
        _items(get("extraAttributes"), ("nameI18nKey", "name", "value")),
        None if (source := get("source")) == "" else source,
        None if (method := get("method")) == "" else method,
    ]

    digest = _prefix(instance).copy()
    digest.update(orjson.dumps(identity))
    return f"dc-{digest.hexdigest()[:32]}"

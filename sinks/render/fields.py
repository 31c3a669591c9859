"""What the ECS and OCSF renderers share: verbs of actions, severities, helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from collector.model import AuditEvent

# bbaudit category -> ECS event.category (allowed values of ECS 8.x).
ECS_CATEGORY: dict[str, tuple[str, ...]] = {
    "authentication": ("authentication",),
    "access": ("iam",),
    "permission": ("iam",),
    "group": ("iam",),
    "user": ("iam",),
    "token": ("iam",),
    "key": ("iam",),
    "repository": ("configuration",),
    "project": ("configuration",),
    "settings": ("configuration",),
    "app": ("configuration", "package"),
    "audit": ("configuration",),
    "export": ("file",),
}

# Last word of a normalized action -> what kind of change it was.
VERB_KIND: dict[str, str] = {
    "created": "creation",
    "added": "creation",
    "installed": "creation",
    "forked": "creation",
    "member_added": "creation",
    "deleted": "deletion",
    "removed": "deletion",
    "member_removed": "deletion",
    "revoked": "deletion",
    "granted": "change",
    "changed": "change",
    "modified": "change",
    "renamed": "change",
    "enabled": "change",
    "disabled": "change",
    "pushed": "change",
    "password_changed": "change",
    "accessed": "access",
    "cloned": "access",
    "fetched": "access",
    "searched": "access",
    "refs_advertised": "access",
    "exported": "access",
    "archived": "access",
    "login": "start",
    "login_failed": "start",
    "logout": "end",
    "unauthorized": "denied",
}

# ECS event.severity and OCSF severity_id for alert severities.
SEVERITY_SCORE = {"info": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}
OCSF_SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


def verb(action: str) -> str:
    """The verb part of ``area.verb`` (``granted`` for ``permission.granted``)."""
    return action.partition(".")[2]


def change_kind(action: str) -> str:
    """The ECS-style kind of an action (``creation``, ``access``, ...) or ``info``."""
    word = verb(action)
    if word in VERB_KIND:
        return VERB_KIND[word]
    return VERB_KIND.get(word.rpartition("_")[2], "info")


def event_types(event: AuditEvent) -> list[str]:
    """ECS ``event.type`` values for the event."""
    types = [change_kind(event.action)]
    if event.category == "authentication" and event.outcome == "failure":
        types = ["start"]
    if event.category == "group":
        types.append("group")
    elif event.category in ("user", "token", "key"):
        types.append("user")
    elif event.category == "permission":
        types.append("admin" if "admin" in (event.raw_action or "").lower() else "user")
    return types


def target_list(event: AuditEvent) -> list[dict[str, str | None]]:
    """The targets as ``{type, name, id}`` objects, in order."""
    return [{"type": t.type, "name": t.name, "id": t.id} for t in event.targets]


def change_list(event: AuditEvent) -> list[dict[str, str | None]]:
    """The changed values as ``{key, from, to}`` objects, in order."""
    return [{"key": c.key, "from": c.old, "to": c.new} for c in event.changes]


def iso_time(value: datetime) -> str:
    """ISO 8601 with a ``Z`` suffix."""
    if value.tzinfo is UTC:
        # The same text as isoformat() (checked over the whole year range),
        # at a third of the cost; every normalized time is in UTC.
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()
    return value.isoformat().replace("+00:00", "Z")


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch."""
    return int(value.timestamp() * 1000)


def put(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating the parents."""
    path = _PATHS.get(dotted)
    if path is None:
        path = _split(dotted)
        if len(_PATHS) < _MAX_PATHS:
            _PATHS[dotted] = path
    parents, last = path
    node = document
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value


# The dotted names are a small fixed set (renderer tables), split once each.
_PATHS: dict[str, tuple[tuple[str, ...], str]] = {}
_MAX_PATHS = 1024


def _split(dotted: str) -> tuple[tuple[str, ...], str]:
    *parents, last = dotted.split(".")
    return tuple(parents), last

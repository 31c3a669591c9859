"""The ``raw`` rendering: the normalized record as bbaudit holds it, plus the
original Bitbucket record under ``raw``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from collector.model import Actor, Alert, AuditEvent
from sinks.render.fields import target_list


def event_to_raw(event: AuditEvent) -> dict[str, Any]:
    """Every field of the audit event, times as ISO 8601 UTC.

    The same document ``dataclasses.asdict`` gives, field by field, without
    its deep copy (which cost more than all the other renderers together):
    ``raw`` and the values inside ``context`` are the event's own objects, as
    in the ECS and OCSF documents. Copy before mutating them.
    """
    return {
        "id": event.id,
        "time": event.time.isoformat(),
        "platform": event.platform,
        "instance": event.instance,
        "source_kind": event.source_kind,
        "action": event.action,
        "category": event.category,
        "outcome": event.outcome,
        "raw_action": event.raw_action,
        "action_key": event.action_key,
        "raw_category": event.raw_category,
        "actor": _actor(event.actor),
        "targets": target_list(event),
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in event.changes],
        "attributes": dict(event.attributes),
        "raw": dict(event.raw),
        "context": dict(event.context),
    }


def _actor(actor: Actor) -> dict[str, Any]:
    return {
        "name": actor.name,
        "id": actor.id,
        "email": actor.email,
        "kind": actor.kind,
        "raw_type": actor.raw_type,
        "auth_method": actor.auth_method,
    }


def alert_to_raw(alert: Alert) -> dict[str, Any]:
    """Every field of the alert, time as ISO 8601 UTC."""
    document = asdict(alert)
    document["time"] = alert.time.isoformat()
    return document

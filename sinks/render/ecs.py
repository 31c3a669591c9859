"""Elastic Common Schema documents for audit events and alerts.

Field choices follow ECS 8.x: ``event.*`` for what happened, ``user.*`` for the
actor, ``source.*`` for where from, ``related.*`` for pivots. bbaudit's own
fields (normalized action, enrichment context) go under ``bbaudit.*``.
"""

from __future__ import annotations

from typing import Any

from collector.model import Alert, AuditEvent

_ECS_VERSION = "8.11.0"
_OUTCOMES = {"success": "success", "failure": "failure", "unknown": "unknown"}


def _time(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def event_to_ecs(event: AuditEvent) -> dict[str, Any]:
    """The ECS document of one audit event."""
    document: dict[str, Any] = {
        "@timestamp": _time(event.time),
        "ecs": {"version": _ECS_VERSION},
        "event": {
            "id": event.id,
            "kind": "event",
            "action": event.raw_action or event.action,
            "category": ["iam"]
            if event.category in _IAM_CATEGORIES
            else ["configuration"],
            "outcome": _OUTCOMES[event.outcome],
            "provider": f"bitbucket-{event.platform}",
            "module": "bbaudit",
            "dataset": f"bitbucket.{event.source_kind}",
        },
        "observer": {
            "vendor": "Atlassian",
            "product": "Bitbucket",
            "name": event.instance,
        },
        "bbaudit": {
            "action": event.action,
            "category": event.category,
            "action_key": event.action_key,
            "targets": [
                {"type": t.type, "name": t.name, "id": t.id} for t in event.targets
            ],
            "changes": [
                {"key": c.key, "from": c.old, "to": c.new} for c in event.changes
            ],
            "attributes": dict(event.attributes),
            "context": event.context,
        },
    }
    _add_user(document, event)
    _add_source(document, event)
    return document


_IAM_CATEGORIES = {"authentication", "permission", "group", "user", "token", "key"}


def _add_user(document: dict[str, Any], event: AuditEvent) -> None:
    actor = event.actor
    user: dict[str, Any] = {}
    if actor.name:
        user["name"] = actor.name
    if actor.id:
        user["id"] = actor.id
    if actor.email:
        user["email"] = actor.email
    if user:
        document["user"] = user
        document["related"] = {"user": [actor.name] if actor.name else []}


def _add_source(document: dict[str, Any], event: AuditEvent) -> None:
    if event.source_ip:
        document["source"] = {"ip": event.source_ip}
        document.setdefault("related", {})["ip"] = [event.source_ip]
    if event.user_agent:
        document["user_agent"] = {"original": event.user_agent}


def alert_to_ecs(alert: Alert) -> dict[str, Any]:
    """The ECS document of one alert (``event.kind: alert``)."""
    document: dict[str, Any] = {
        "@timestamp": _time(alert.time),
        "ecs": {"version": _ECS_VERSION},
        "event": {
            "id": alert.id,
            "kind": "alert",
            "severity": alert.risk_score,
            "risk_score": alert.risk_score,
            "module": "bbaudit",
            "dataset": "bbaudit.alerts",
        },
        "message": alert.summary,
        "rule": {
            "id": alert.rule_id,
            "name": alert.rule_name,
            "author": [alert.rule_author] if alert.rule_author else [],
            "reference": list(alert.references),
        },
        "threat": {
            "framework": "MITRE ATT&CK",
            "technique": [{"id": t} for t in alert.techniques],
        },
        "bbaudit": {
            "severity": alert.severity,
            "key": alert.key,
            "evidence": list(alert.evidence),
            "details": dict(alert.details),
        },
    }
    if alert.actor:
        document["user"] = {"name": alert.actor}
    if alert.source_ip:
        document["source"] = {"ip": alert.source_ip}
        if alert.geo:
            document["source"]["geo"] = dict(alert.geo)
    return document

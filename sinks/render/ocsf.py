"""OCSF 1.1 documents for audit events and alerts.

Audit events map to IAM classes where one fits: Authentication (3002) for
``auth.*``, Account Change (3001) for user, token and key actions, Group
Management (3006) for groups, User Access Management (3005) for permission
grants; everything else is API Activity (6003) with the action as
``api.operation``. Alerts are Detection Findings (2004). bbaudit's own fields
go under ``unmapped.bbaudit``.
"""

from __future__ import annotations

from typing import Any

import orjson

from collector.memo import Memo
from collector.model import Alert, AuditEvent
from sinks.render.fields import (
    OCSF_SEVERITY_ID,
    change_kind,
    change_list,
    epoch_ms,
    target_list,
    verb,
)

OCSF_VERSION = "1.1.0"
_PRODUCT = {"name": "Bitbucket", "vendor_name": "Atlassian"}
_STATUS = {
    "success": (1, "Success"),
    "failure": (2, "Failure"),
    "unknown": (0, "Unknown"),
}

# class_uid -> (category_uid, class name)
CLASSES: dict[int, tuple[int, str]] = {
    3001: (3, "Account Change"),
    3002: (3, "Authentication"),
    3005: (3, "User Access Management"),
    3006: (3, "Group Management"),
    6003: (6, "API Activity"),
    2004: (2, "Detection Finding"),
}
_CLASS_BY_CATEGORY = {
    "authentication": 3002,
    "user": 3001,
    "token": 3001,
    "key": 3001,
    "group": 3006,
    "permission": 3005,
}
# (class_uid, verb) -> activity_id; a missing pair falls back by change kind.
_ACTIVITY: dict[tuple[int, str], int] = {
    (3002, "login"): 1,
    (3002, "login_failed"): 1,
    (3002, "logout"): 2,
    (3001, "password_changed"): 3,
    (3001, "enabled"): 2,
    (3001, "disabled"): 5,
    (3005, "granted"): 1,
    (3005, "revoked"): 2,
    (3006, "member_added"): 3,
    (3006, "member_removed"): 4,
    (3006, "deleted"): 5,
    (3006, "created"): 6,
}
_ACTIVITY_BY_KIND = {
    3001: {"creation": 1, "deletion": 6},
    6003: {"creation": 1, "access": 2, "change": 3, "deletion": 4},
}
_USER_TYPE = {"human": "User", "system": "System"}
# OCSF observable type_id values.
_USER_NAME, _IP_ADDRESS, _EMAIL = 4, 2, 5


def event_class(event: AuditEvent) -> int:
    """The OCSF class_uid for an audit event."""
    return _CLASS_BY_CATEGORY.get(event.category, 6003)


def event_to_ocsf(event: AuditEvent, *, original: bool = False) -> dict[str, Any]:
    """The OCSF document of one audit event; ``original`` adds ``raw_data``."""
    class_uid = event_class(event)
    activity_id = _activity(class_uid, event.action)
    status_id, status = _STATUS[event.outcome]
    document: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": CLASSES[class_uid][1],
        "category_uid": CLASSES[class_uid][0],
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": epoch_ms(event.time),
        "severity_id": 1,
        "status_id": status_id,
        "status": status,
        "message": f"{event.actor.name or 'unknown actor'}: {event.action}",
        "metadata": _metadata(event.id, event.raw_action or event.action),
        "actor": {"user": _actor_user(event)},
        "observables": _observables(event),
        "unmapped": {"bbaudit": _unmapped(event)},
    }
    _add_endpoint(document, event.source_ip, event.context.get("geo"))
    _add_class_fields(document, class_uid, event)
    if event.user_agent:
        document["http_request"] = {"user_agent": event.user_agent}
    if original:
        document["raw_data"] = orjson.dumps(event.raw, default=str).decode()
    return document


def _activity(class_uid: int, action: str) -> int:
    activity = _ACTIVITY_SEEN.get((class_uid, action))
    if activity is None:
        activity = _ACTIVITY.get((class_uid, verb(action)))
        if activity is None:
            by_kind = _ACTIVITY_BY_KIND.get(class_uid, {})
            activity = by_kind.get(change_kind(action), 99)
        _ACTIVITY_SEEN.remember((class_uid, action), activity)
    return activity


# activity_id per (class_uid, action): an instance uses a few hundred actions,
# and the cap holds whatever arrives.
_ACTIVITY_SEEN: Memo[tuple[int, str], int] = Memo()


def _metadata(uid: str, event_code: str) -> dict[str, Any]:
    return {
        "version": OCSF_VERSION,
        "product": dict(_PRODUCT),
        "uid": uid,
        "event_code": event_code,
        "profiles": [],
    }


def _actor_user(event: AuditEvent) -> dict[str, Any]:
    identity = event.context.get("identity") or {}
    user: dict[str, Any] = {
        "name": event.actor.name,
        "uid": event.actor.id,
        "email_addr": event.actor.email or identity.get("email"),
        "full_name": identity.get("display_name"),
        "domain": identity.get("directory"),
        "groups": [{"name": g} for g in identity.get("groups") or []],
        "type": _USER_TYPE.get(event.actor.kind),
    }
    return {k: v for k, v in user.items() if v not in (None, [])}


def _add_endpoint(
    document: dict[str, Any], ip: str | None, geo: dict[str, Any] | None
) -> None:
    if not ip:
        return
    endpoint: dict[str, Any] = {"ip": ip}
    geo = geo or {}
    location = {
        "country": geo.get("country_iso"),
        "city": geo.get("city"),
        "lat": geo.get("latitude"),
        "long": geo.get("longitude"),
    }
    location = {k: v for k, v in location.items() if v is not None}
    if location:
        endpoint["location"] = location
    if geo.get("asn") is not None:
        endpoint["autonomous_system"] = {
            "number": geo["asn"],
            "name": geo.get("as_org"),
        }
    document["src_endpoint"] = endpoint


def _add_class_fields(
    document: dict[str, Any], class_uid: int, event: AuditEvent
) -> None:
    users = [t for t in event.targets if t.type == "USER"]
    target_user = {"name": users[0].name, "uid": users[0].id} if users else None
    if class_uid == 3002:
        document["user"] = document["actor"]["user"]
    elif class_uid in (3001, 3005):
        document["user"] = target_user or document["actor"]["user"]
        if class_uid == 3005:
            document["privileges"] = _privileges(event)
    elif class_uid == 3006:
        groups = [t for t in event.targets if t.type == "GROUP"]
        document["group"] = {"name": groups[0].name if groups else None}
        if target_user:
            document["user"] = target_user
    else:
        document["api"] = {"operation": event.action, "service": {"name": "bitbucket"}}
        document["resources"] = [
            {"type": t.type, "name": t.name, "uid": t.id} for t in event.targets
        ]


def _privileges(event: AuditEvent) -> list[str]:
    found = [v for k, v in event.attributes.items() if "permission" in k.lower()]
    found += [c.new for c in event.changes if c.new]
    return found or [event.action]


def _observables(event: AuditEvent) -> list[dict[str, Any]]:
    observables: list[dict[str, Any]] = []
    if event.actor.name:
        observables.append(
            {
                "name": "actor.user.name",
                "type_id": _USER_NAME,
                "value": event.actor.name,
            }
        )
    if event.actor.email:
        observables.append(
            {
                "name": "actor.user.email_addr",
                "type_id": _EMAIL,
                "value": event.actor.email,
            }
        )
    if event.source_ip:
        observables.append(
            {
                "name": "src_endpoint.ip",
                "type_id": _IP_ADDRESS,
                "value": event.source_ip,
            }
        )
    return observables


def _unmapped(event: AuditEvent) -> dict[str, Any]:
    return {
        "action": event.action,
        "category": event.category,
        "instance": event.instance,
        "source_kind": event.source_kind,
        "targets": target_list(event),
        "changes": change_list(event),
        "context": event.context,
    }


def alert_to_ocsf(alert: Alert, *, original: bool = False) -> dict[str, Any]:
    """The OCSF Detection Finding (2004) of one alert."""
    document: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": CLASSES[2004][1],
        "category_uid": 2,
        "activity_id": 1,
        "type_uid": 200401,
        "time": epoch_ms(alert.time),
        "severity_id": OCSF_SEVERITY_ID[alert.severity],
        "severity": alert.severity.capitalize(),
        "risk_score": alert.risk_score,
        "status_id": 1,
        "message": alert.summary,
        "metadata": _metadata(alert.id, alert.rule_id),
        "finding_info": {
            "uid": alert.id,
            "title": alert.rule_name,
            "desc": alert.summary,
            "analytic": {"uid": alert.rule_id, "name": alert.rule_name, "type_id": 1},
            "attacks": [{"technique": {"uid": t}} for t in alert.techniques],
            "related_events": [{"uid": e} for e in alert.evidence],
            "src_url": alert.references[0] if alert.references else None,
        },
        "observables": [],
        "unmapped": {"bbaudit": {"key": alert.key, "details": dict(alert.details)}},
    }
    if alert.actor:
        document["actor"] = {"user": {"name": alert.actor}}
        document["observables"].append(
            {"name": "actor.user.name", "type_id": _USER_NAME, "value": alert.actor}
        )
    if alert.source_ip:
        _add_endpoint(document, alert.source_ip, dict(alert.geo or {}))
        document["observables"].append(
            {
                "name": "src_endpoint.ip",
                "type_id": _IP_ADDRESS,
                "value": alert.source_ip,
            }
        )
    if original:
        document["raw_data"] = orjson.dumps(alert, default=str).decode()
    return document

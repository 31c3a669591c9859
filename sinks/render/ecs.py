"""Elastic Common Schema (8.x) documents for audit events and alerts.

``event.*`` says what happened (``event.action`` is bbaudit's normalized action,
the Bitbucket name is in ``bbaudit.raw_action``), ``user.*`` who, ``source.*``
from where, ``related.*`` gives pivots. Enrichment context is mapped to ECS
fields by the one table ``CONTEXT_TO_ECS``; what ECS has no field for stays
under ``bbaudit.*``.
"""

from __future__ import annotations

from typing import Any

import orjson

from collector.memo import Memo
from collector.model import Alert, AuditEvent, Target
from sinks.render.fields import (
    ECS_CATEGORY,
    SEVERITY_SCORE,
    change_list,
    event_types,
    iso_time,
    put,
    target_list,
)

ECS_VERSION = "8.11.0"
_Kinds = tuple[tuple[str, ...], tuple[str, ...]]

# (context key, field in that context, ECS field). One row per copied value.
CONTEXT_TO_ECS: tuple[tuple[str, str, str], ...] = (
    ("identity", "email", "user.email"),
    ("identity", "display_name", "user.full_name"),
    ("identity", "directory", "user.domain"),
    ("identity", "groups", "user.roles"),
    ("geo", "country_iso", "source.geo.country_iso_code"),
    ("geo", "country", "source.geo.country_name"),
    ("geo", "city", "source.geo.city_name"),
    ("geo", "latitude", "source.geo.location.lat"),
    ("geo", "longitude", "source.geo.location.lon"),
    ("geo", "asn", "source.as.number"),
    ("geo", "as_org", "source.as.organization.name"),
    ("identity", "department", "bbaudit.identity.department"),
    ("identity", "title", "bbaudit.identity.title"),
    ("identity", "manager", "bbaudit.identity.manager"),
    ("identity", "status", "bbaudit.identity.status"),
    ("identity", "mfa_enrolled", "bbaudit.identity.mfa_enrolled"),
    ("identity", "human", "bbaudit.identity.human"),
    ("identity", "matched_by", "bbaudit.identity.matched_by"),
    ("geo", "scope", "bbaudit.geo.scope"),
    ("zones", "", "bbaudit.network.zones"),
    ("repo", "", "bbaudit.repo"),
    ("git", "", "bbaudit.git"),
    ("enrichment_errors", "", "bbaudit.enrichment_errors"),
)


def event_to_ecs(event: AuditEvent, *, original: bool = False) -> dict[str, Any]:
    """The ECS document of one audit event; ``original`` adds ``event.original``."""
    categories, types = _event_kinds(event)
    document: dict[str, Any] = {
        "@timestamp": iso_time(event.time),
        "ecs": {"version": ECS_VERSION},
        "message": _message(event),
        "event": {
            "id": event.id,
            "kind": "event",
            "action": event.action,
            # Fresh lists per document: a caller may extend them.
            "category": list(categories),
            "type": list(types),
            "outcome": event.outcome,
            "provider": f"bitbucket-{event.platform}",
            "module": "bbaudit",
            "dataset": f"bitbucket.{event.source_kind}",
        },
        "observer": {"vendor": "Atlassian", "product": "Bitbucket"},
        "service": {"name": event.instance},
        "bbaudit": _bbaudit(event),
    }
    if original:
        document["event"]["original"] = orjson.dumps(event.raw, default=str).decode()
    _add_actor(document, event)
    _add_source(document, event)
    add_context(document, event.context)
    _add_related(document, event)
    return document


def _rows_by_context_key() -> dict[str, tuple[tuple[str, str], ...]]:
    rows: dict[str, list[tuple[str, str]]] = {}
    for key, name, target in CONTEXT_TO_ECS:
        rows.setdefault(key, []).append((name, target))
    return {key: tuple(pairs) for key, pairs in rows.items()}


# CONTEXT_TO_ECS grouped by context key, in table order: an event carries only
# a few context keys, so the walk starts from those instead of every row.
_ROWS_BY_KEY = _rows_by_context_key()


def add_context(document: dict[str, Any], context: dict[str, Any]) -> None:
    """Copy enrichment context into ECS fields following ``CONTEXT_TO_ECS``."""
    if not context:
        return
    for key, rows in _ROWS_BY_KEY.items():
        block = context.get(key)
        if block is None:
            continue
        is_dict = isinstance(block, dict)
        for name, target in rows:
            value = block.get(name) if name and is_dict else block
            if value not in (None, [], {}):
                put(document, target, value)


def _message(event: AuditEvent) -> str:
    who = event.actor.name or "unknown actor"
    what = ", ".join(f"{t.type} {t.name}" for t in event.targets if t.name)
    return f"{who}: {event.action}" + (f" ({what})" if what else "")


def _bbaudit(event: AuditEvent) -> dict[str, Any]:
    return {
        "category": event.category,
        "raw_action": event.raw_action,
        "action_key": event.action_key,
        "raw_category": event.raw_category,
        "actor_kind": event.actor.kind,
        "targets": target_list(event),
        "changes": change_list(event),
        "attributes": dict(event.attributes),
    }


def _event_kinds(event: AuditEvent) -> _Kinds:
    """ECS ``event.category`` and ``event.type`` values, remembered per action."""
    key = (event.action, event.category, event.outcome, event.raw_action)
    kinds = _KINDS.get(key)
    if kinds is None:
        categories = ECS_CATEGORY.get(event.category, ("configuration",))
        kinds = _KINDS.remember(key, (categories, tuple(event_types(event))))
    return kinds


# An instance uses a few hundred actions; the cap holds whatever arrives.
_KINDS: Memo[tuple[str, str, str, str | None], _Kinds] = Memo()


def _add_actor(document: dict[str, Any], event: AuditEvent) -> None:
    # Built directly, not by put(): these run for every event, and the key
    # order is the one put() gave (name, id, email, target).
    actor = event.actor
    user: dict[str, Any] = {}
    if actor.name:
        user["name"] = actor.name
    if actor.id:
        user["id"] = actor.id
    if actor.email:
        user["email"] = actor.email
    target_user = _first_named(event, "USER")
    if target_user is not None:
        user["target"] = {"name": target_user.name}
        if target_user.id:
            user["target"]["id"] = target_user.id
    if user:
        document["user"] = user
    group = _first_named(event, "GROUP")
    if group is not None:
        document["group"] = {"name": group.name}


def _first_named(event: AuditEvent, target_type: str) -> Target | None:
    for target in event.targets:
        if target.type == target_type and target.name:
            return target
    return None


def _add_source(document: dict[str, Any], event: AuditEvent) -> None:
    if event.source_ip:
        document["source"] = {"ip": event.source_ip, "address": event.source_ip}
    if event.user_agent:
        document["user_agent"] = {"original": event.user_agent}


def _add_related(document: dict[str, Any], event: AuditEvent) -> None:
    identity = event.context.get("identity") or {}
    users = [event.actor.name, identity.get("username"), identity.get("email")]
    users += [t.name for t in event.targets if t.type == "USER"]
    related: dict[str, Any] = {"user": sorted({u for u in users if u})}
    if event.source_ip:
        related["ip"] = [event.source_ip]
    document["related"] = related


def alert_to_ecs(alert: Alert, *, original: bool = False) -> dict[str, Any]:
    """The ECS document of one alert (``event.kind: alert``)."""
    document: dict[str, Any] = {
        "@timestamp": iso_time(alert.time),
        "ecs": {"version": ECS_VERSION},
        "message": alert.summary,
        "event": {
            "id": alert.id,
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["indicator"],
            "severity": SEVERITY_SCORE[alert.severity],
            "risk_score": float(alert.risk_score),
            "module": "bbaudit",
            "dataset": "bbaudit.alerts",
        },
        "rule": {
            "id": alert.rule_id,
            "name": alert.rule_name,
            "description": alert.rule_name,
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
    if original:
        document["event"]["original"] = orjson.dumps(alert, default=str).decode()
    _add_alert_parties(document, alert)
    return document


def _add_alert_parties(document: dict[str, Any], alert: Alert) -> None:
    context = alert.details.get("context")
    if isinstance(context, dict):
        # Identity, repository and zones of the event that fired, in the same
        # ECS fields as on events (user.email, user.full_name, ...).
        add_context(document, context)
    related: dict[str, Any] = {}
    if alert.actor:
        put(document, "user.name", alert.actor)
        related["user"] = [alert.actor]
    if alert.source_ip:
        put(document, "source.ip", alert.source_ip)
        related["ip"] = [alert.source_ip]
        if alert.geo:
            add_context(document, {"geo": dict(alert.geo)})
    if alert.platform:
        put(document, "event.provider", f"bitbucket-{alert.platform}")
    if related:
        document["related"] = related

"""Alert ids and alert records.

An alert id is a hash of (rule id, key, anchor), where the anchor names the
window the alert covers: the first evidence event of a window rule, or the one
event of a single-event rule. Replaying the same audit events therefore yields
the same ids, and the SIEM can drop a repeat after a crash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from collector.model import Alert, AuditEvent, Severity

RISK_BY_SEVERITY: dict[str, int] = {
    "info": 5,
    "low": 21,
    "medium": 47,
    "high": 73,
    "critical": 99,
}


def alert_id(rule_id: str, key: str, anchor: str) -> str:
    """A stable id for the alert of ``rule_id`` on ``key`` over ``anchor``."""
    digest = hashlib.sha256(f"{rule_id}\x1f{key}\x1f{anchor}".encode())
    return digest.hexdigest()[:32]


def severity_for_risk(risk: int) -> Severity:
    """The severity band a summed risk score falls in."""
    if risk >= 99:
        return "critical"
    if risk >= 73:
        return "high"
    if risk >= 47:
        return "medium"
    return "low" if risk >= 21 else "info"


def build_alert(
    *,
    rule_id: str,
    rule_name: str,
    severity: Severity,
    risk_score: int,
    techniques: tuple[str, ...],
    event: AuditEvent,
    time: datetime,
    key: str,
    anchor: str,
    summary: str,
    evidence: tuple[str, ...],
    actor: str | None,
    details: Mapping[str, Any],
    author: str | None = None,
    references: tuple[str, ...] = (),
) -> Alert:
    """An ``Alert`` about ``event`` (the event that made the rule fire).

    The alert carries what an analyst needs without opening Bitbucket: the
    event's action and targets, and its identity, repository and zone
    context, under ``details``.
    """
    geo = event.context.get("geo")
    details = {**details, **_about(event)}
    return Alert(
        id=alert_id(rule_id, key, anchor),
        rule_id=rule_id,
        rule_name=rule_name,
        severity=severity,
        risk_score=risk_score,
        time=time,
        summary=summary,
        key=key,
        evidence=evidence,
        techniques=techniques,
        actor=actor,
        source_ip=event.source_ip,
        geo=dict(geo) if isinstance(geo, Mapping) else None,
        platform=event.platform,
        instance=event.instance,
        rule_author=author,
        references=references,
        details=dict(details),
    )


_CONTEXT_KEYS = ("identity", "repo", "zones")
_MAX_TARGETS = 10


def _about(event: AuditEvent) -> dict[str, Any]:
    about: dict[str, Any] = {"action": event.action}
    targets = [f"{t.type}:{t.name}" for t in event.targets[:_MAX_TARGETS] if t.name]
    if targets:
        about["targets"] = targets
    context = {k: event.context[k] for k in _CONTEXT_KEYS if k in event.context}
    if context:
        about["context"] = context
    return about

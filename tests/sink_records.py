"""Audit events and alerts for the sink tests, with awkward values on request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.model import Actor, Alert, AuditEvent, Target

BASE_TIME = datetime(2026, 9, 25, 12, 0, 0, 123456, tzinfo=UTC)


def make_event(number: int, *, note: str = "", actor: str = "alice") -> AuditEvent:
    """Audit event ``ev-<number>``; ``note`` lands in its attributes and actor."""
    return AuditEvent(
        id=f"ev-{number:06d}",
        time=BASE_TIME + timedelta(seconds=number),
        platform="dc",
        instance="bb-node-1",
        source_kind="dc_audit_file",
        action="repo.permission_granted",
        category="permissions",
        outcome="success",
        actor=Actor(name=actor + note, kind="human"),
        targets=(Target(type="REPOSITORY", name="PROJ/repo" + note),),
        source_ip="10.0.0.7",
        attributes={"note": note},
    )


def make_alert(number: int, *, note: str = "") -> Alert:
    """Alert ``al-<number>`` with ``note`` in its summary, key and actor."""
    return Alert(
        id=f"al-{number:06d}",
        rule_id="bb.mass_clone",
        rule_name="Mass clone" + note,
        severity="high",
        risk_score=73,
        time=BASE_TIME + timedelta(seconds=number),
        summary="Many clones" + note,
        key="alice" + note,
        evidence=("ev-000001", "ev-000002"),
        techniques=("T1213",),
        actor="alice" + note,
        source_ip="10.0.0.7",
        instance="bb-node-1",
    )

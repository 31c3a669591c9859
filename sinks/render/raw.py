"""The ``raw`` rendering: the normalized record as bbaudit holds it, plus the
original Bitbucket record under ``raw``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from collector.model import Alert, AuditEvent


def event_to_raw(event: AuditEvent) -> dict[str, Any]:
    """Every field of the audit event, times as ISO 8601 UTC."""
    document = asdict(event)
    document["time"] = event.time.isoformat()
    document["raw"] = dict(event.raw)
    return document


def alert_to_raw(alert: Alert) -> dict[str, Any]:
    """Every field of the alert, time as ISO 8601 UTC."""
    document = asdict(alert)
    document["time"] = alert.time.isoformat()
    return document

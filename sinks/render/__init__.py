"""Renderers: turn audit events and alerts into the documents a SIEM expects.

``render(record, fmt)`` returns a JSON-ready dict; the sink serializes it.
"""

from __future__ import annotations

from typing import Any

from collector.model import Alert, AuditEvent, Record
from sinks.render.ecs import alert_to_ecs, event_to_ecs
from sinks.render.raw import alert_to_raw, event_to_raw


def render(record: Record, fmt: str) -> dict[str, Any]:
    """The document for one record in format ``ecs``, ``ocsf`` or ``raw``."""
    if isinstance(record, AuditEvent):
        if fmt == "raw":
            return event_to_raw(record)
        return event_to_ecs(record)
    assert isinstance(record, Alert)
    if fmt == "raw":
        return alert_to_raw(record)
    return alert_to_ecs(record)


__all__ = ["render"]

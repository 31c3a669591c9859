"""Renderers: turn audit events and alerts into the documents a SIEM expects.

``render(record, fmt)`` returns a JSON-ready dict; the sink serializes it.
Formats: ``ecs`` (Elastic Common Schema), ``ocsf`` (Open Cybersecurity Schema
Framework) and ``raw`` (bbaudit's own shape). ``cef`` sinks render lines
themselves and get the ECS document here.
"""

from __future__ import annotations

from typing import Any

from collector.model import Alert, AuditEvent, Record
from sinks.render.ecs import alert_to_ecs, event_to_ecs
from sinks.render.ocsf import alert_to_ocsf, event_to_ocsf
from sinks.render.raw import alert_to_raw, event_to_raw


def render(record: Record, fmt: str, *, original: bool = False) -> dict[str, Any]:
    """The document for one record in format ``ecs``, ``ocsf`` or ``raw``.

    ``original`` adds the source record as JSON text (ECS ``event.original``,
    OCSF ``raw_data``).
    """
    if isinstance(record, AuditEvent):
        if fmt == "raw":
            return event_to_raw(record)
        if fmt == "ocsf":
            return event_to_ocsf(record, original=original)
        return event_to_ecs(record, original=original)
    assert isinstance(record, Alert)
    if fmt == "raw":
        return alert_to_raw(record)
    if fmt == "ocsf":
        return alert_to_ocsf(record, original=original)
    return alert_to_ecs(record, original=original)


__all__ = ["render"]

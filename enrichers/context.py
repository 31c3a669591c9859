"""Helpers every enricher uses to write into ``AuditEvent.context``."""

from __future__ import annotations

from collections.abc import Iterable

from collector.model import AuditEvent

ERRORS_KEY = "enrichment_errors"
_MAX_REASON_CHARS = 200


def mark_error(event: AuditEvent, enricher: str, reason: str) -> None:
    """Append ``"<enricher>: <reason>"`` to the event's enrichment errors.

    The same text is not added twice, so a retried batch stays readable.
    """
    text = f"{enricher}: {reason[:_MAX_REASON_CHARS]}"
    errors = event.context.setdefault(ERRORS_KEY, [])
    if text not in errors:
        errors.append(text)


def mark_errors(events: Iterable[AuditEvent], enricher: str, reason: str) -> None:
    """``mark_error`` for each of ``events``."""
    for event in events:
        mark_error(event, enricher, reason)

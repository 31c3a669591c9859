"""Records to bytes and back, for the disk spool.

The spool stores records, not rendered documents, so that any sink (whatever
its format or envelope) can send spooled records through its ordinary ``send``
after a restart. One record is one orjson object; ``decode_record`` rebuilds
the same frozen ``AuditEvent`` or ``Alert``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from collector.model import Actor, Alert, AuditEvent, Change, Record, Target

_EVENT = "e"
_ALERT = "a"


def encode_record(record: Record) -> bytes:
    """One record as a JSON object tagged with its kind (``k``)."""
    kind = _ALERT if isinstance(record, Alert) else _EVENT
    body = orjson.dumps(record, default=str)
    return b'{"k":"' + kind.encode() + b'","r":' + body + b"}"


def decode_record(data: bytes) -> Record:
    """The record that ``encode_record`` wrote; ``ValueError`` if unreadable."""
    try:
        wrapper = orjson.loads(data)
        fields: dict[str, Any] = wrapper["r"]
        if wrapper["k"] == _ALERT:
            return _alert(fields)
        return _event(fields)
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"unreadable spooled record: {exc}") from exc


def _event(fields: dict[str, Any]) -> AuditEvent:
    fields["time"] = datetime.fromisoformat(fields["time"])
    fields["actor"] = Actor(**fields["actor"])
    fields["targets"] = tuple(Target(**t) for t in fields["targets"])
    fields["changes"] = tuple(Change(**c) for c in fields["changes"])
    return AuditEvent(**fields)


def _alert(fields: dict[str, Any]) -> Alert:
    fields["time"] = datetime.fromisoformat(fields["time"])
    for key in ("evidence", "techniques", "references"):
        fields[key] = tuple(fields[key])
    return Alert(**fields)

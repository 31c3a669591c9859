"""ArcSight Common Event Format (CEF) lines for alerts and audit events.

``CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension``

Escaping (one function per part, so no value can forge a field or a line):

- header fields: ``\\`` -> ``\\\\`` and ``|`` -> ``\\|``; CR and LF become ``\\r`` and
  ``\\n`` too (the CEF guide forbids them in the header; escaping them keeps the
  value and keeps the message on one line);
- extension values: ``\\`` -> ``\\\\``, ``=`` -> ``\\=``, CR -> ``\\r``, LF -> ``\\n``
  (``|`` needs no escape there);
- extension keys are ASCII letters and digits only; anything else is removed.

The output never contains a raw CR or LF.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from collector.memo import Memo
from collector.model import Alert, AuditEvent, Record

DEFAULT_VENDOR = "bbaudit"
DEFAULT_PRODUCT = "bbaudit"
DEFAULT_VERSION = "0.1"

# Characters that some receivers treat as line ends (NEL, LS, PS) or string
# ends (NUL) have no CEF escape of their own: they become \uXXXX, which
# unescape() reads back, so no value can end a line or a message early.
_INVISIBLE = {
    "\x00": "\\u0000",
    "\x85": "\\u0085",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_HEADER_ESCAPES = {"\\": "\\\\", "|": "\\|", "\r": "\\r", "\n": "\\n", **_INVISIBLE}
_VALUE_ESCAPES = {"\\": "\\\\", "=": "\\=", "\r": "\\r", "\n": "\\n", **_INVISIBLE}
_HEADER_RE = re.compile("[\\\\|\r\n\x00\x85\u2028\u2029]")
_VALUE_RE = re.compile("[\\\\=\r\n\x00\x85\u2028\u2029]")
_UNESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(.)", re.DOTALL)
_UNESCAPES = {"\\": "\\", "|": "|", "=": "=", "r": "\r", "n": "\n"}
_KEY_RE = re.compile(r"[^A-Za-z0-9]")

# bbaudit severity -> CEF 0..10 (the CEF guide: 0-3 low, 4-6 medium, 7-8 high,
# 9-10 very high).
ALERT_SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
EVENT_SEVERITY = {"success": 1, "unknown": 2, "failure": 4}


def escape_header(value: str) -> str:
    """A header field with ``\\``, ``|``, CR and LF escaped."""
    if _HEADER_RE.search(value) is None:  # most values: no call per match
        return value
    return _HEADER_RE.sub(lambda m: _HEADER_ESCAPES[m.group()], value)


def escape_value(value: str) -> str:
    """An extension value with ``\\``, ``=``, CR and LF escaped."""
    if _VALUE_RE.search(value) is None:
        return value
    return _VALUE_RE.sub(lambda m: _VALUE_ESCAPES[m.group()], value)


def unescape(value: str) -> str:
    """Undo ``escape_header`` or ``escape_value`` (unknown escapes keep their char)."""
    return _UNESCAPE_RE.sub(_unescape_one, value)


def _unescape_one(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return chr(int(match.group(1), 16))
    return _UNESCAPES.get(match.group(2), match.group(2))


def extension_key(name: str) -> str:
    """``name`` reduced to ASCII letters and digits (``x`` if nothing is left)."""
    key = _KEYS.get(name)
    if key is None:
        key = _KEY_RE.sub("", name) or "x"
        _KEYS.remember(name, key)
    return key


# Every line repeats the same extension keys; most sources recur too.
_KEYS: Memo[str, str] = Memo()
_IS_ADDRESS: Memo[str, bool] = Memo()


def format_line(
    signature_id: str,
    name: str,
    severity: int,
    extension: Iterable[tuple[str, str | None]],
    *,
    vendor: str = DEFAULT_VENDOR,
    product: str = DEFAULT_PRODUCT,
    version: str = DEFAULT_VERSION,
) -> str:
    """One CEF line; extension pairs with a ``None`` value are left out."""
    header = [vendor, product, version, signature_id, name]
    fields = "|".join(escape_header(h) for h in header)
    sev = min(max(severity, 0), 10)
    ext = " ".join(
        f"{extension_key(k)}={escape_value(v)}" for k, v in extension if v is not None
    )

    return f"CEF:0|{fields}|{sev}|{ext}"


def format_record(record: Record, **header: str) -> str:
    """The CEF line of an alert or an audit event."""
    if isinstance(record, Alert):
        return format_alert(record, **header)
    return format_event(record, **header)


def format_alert(alert: Alert, **header: str) -> str:
    """An alert as CEF: the rule is the signature, its id also goes in ``cs1``."""
    ext: list[tuple[str, str | None]] = [
        ("rt", _epoch_ms(alert.time)),
        ("externalId", alert.id),
        ("msg", alert.summary),
        ("suser", alert.actor),
        *_address(alert.source_ip),
        ("dvchost", alert.instance),
        ("cs1Label", "ruleId"),
        ("cs1", alert.rule_id),
        ("cs2Label", "techniques"),
        ("cs2", ",".join(alert.techniques) or None),
        ("cs3Label", "evidence"),
        ("cs3", ",".join(alert.evidence) or None),
        ("cs4Label", "alertKey"),
        ("cs4", alert.key),
        ("cn1Label", "riskScore"),
        ("cn1", str(alert.risk_score)),
    ]
    severity = ALERT_SEVERITY.get(alert.severity, 5)

    return format_line(alert.rule_id, alert.rule_name, severity, ext, **header)


def format_event(event: AuditEvent, **header: str) -> str:
    """An audit event as CEF: the normalized action is the signature."""
    targets = ",".join(f"{t.type}:{t.name or t.id or ''}" for t in event.targets)
    ext: list[tuple[str, str | None]] = [
        ("rt", _epoch_ms(event.time)),
        ("externalId", event.id),
        ("act", event.action),
        ("cat", event.category),
        ("outcome", event.outcome),
        ("suser", event.actor.name),
        ("suid", event.actor.id),
        *_address(event.source_ip),
        ("requestClientApplication", event.user_agent),
        ("dvchost", event.instance),
        ("cs1Label", "targets"),
        ("cs1", targets or None),
        ("cs2Label", "rawAction"),
        ("cs2", event.raw_action),
    ]
    severity = EVENT_SEVERITY.get(event.outcome, 2)

    return format_line(event.action, event.action, severity, ext, **header)


def _epoch_ms(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(int(moment.timestamp() * 1000))


def _address(value: str | None) -> list[tuple[str, str | None]]:
    """``src`` must be an IP address; anything else goes to ``cs6`` instead."""
    if value is None:
        return []
    if _is_address(value):
        return [("src", value)]
    return [("cs6Label", "sourceAddress"), ("cs6", value)]


def _is_address(value: str) -> bool:
    known = _IS_ADDRESS.get(value)
    if known is None:
        try:
            ipaddress.ip_address(value)
            known = True
        except ValueError:
            known = False
        _IS_ADDRESS.remember(value, known)
    return known

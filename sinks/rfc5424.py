"""RFC 5424 syslog messages: header, structured data and message, as bytes.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID PARAM="VALUE" ...] MSG``

Contract:

- header fields are reduced to PRINTUSASCII (33..126) and cut to the RFC's byte
  limits (255/48/128/32); an empty field becomes ``-``;
- SD names keep at most 32 PRINTUSASCII characters other than ``=``, SP, ``]``
  and ``"``;
- PARAM-VALUEs escape ``"``, ``\\`` and ``]`` as the RFC says, and also CR and LF as
  ``\\r`` and ``\\n`` (an extension of ours: the RFC allows raw CR/LF there, but a
  raw line break lets a value split or forge a message on newline-framed paths);
- the MSG is UTF-8 **without** a BOM by default: many receivers keep the BOM as
  part of the text and the JSON or CEF parser after them chokes on it;
- ``fit`` cuts a message to a byte budget on a UTF-8 boundary and marks it with
  ``truncated="true"`` in the structured data (the marker sits before MSG, so it
  survives the cut).

Nothing produced here contains a raw CR or LF except inside MSG, and the MSG
builders of the syslog sink (JSON, CEF) never produce one either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

BOM = b"\xef\xbb\xbf"
DEFAULT_SD_ID = "bbaudit@32473"  # 32473 is the example PEN reserved by RFC 5612

FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITIES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_NOT_SD_NAME = re.compile(r"[^\x21-\x7e]|[= \]\"]")
_PARAM_ESCAPES = {'"': '\\"', "\\": "\\\\", "]": "\\]", "\r": "\\r", "\n": "\\n"}
_PARAM_RE = re.compile(r'["\\\]\r\n]')
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPES = {'"': '"', "\\": "\\", "]": "]", "r": "\r", "n": "\n"}
_MAX_PARAM_BYTES = 128
TRUNCATED_PARAM = ("truncated", "true")


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed part of every message a sink sends."""

    facility: int
    hostname: str
    app_name: str = "bbaudit"
    procid: str = "-"


def pri(facility: int, severity: int) -> int:
    """``facility * 8 + severity``; both are range-checked."""
    if not 0 <= facility <= 23 or not 0 <= severity <= 7:
        raise ValueError(f"facility {facility} / severity {severity} out of range")
    return facility * 8 + severity


def header_field(value: str | None, limit: int) -> str:
    """A header field: PRINTUSASCII only, at most ``limit`` chars, ``-`` if empty."""
    cleaned = _NOT_PRINTUSASCII.sub("_", value or "")[:limit]
    return cleaned or "-"


def sd_name(name: str) -> str:
    """An SD-NAME or SD-ID: the allowed characters of ``name``, at most 32."""
    cleaned = _NOT_SD_NAME.sub("_", name)[:32]
    return cleaned or "_"


def escape_param_value(value: str) -> str:
    """A PARAM-VALUE with ``"``, ``\\``, ``]``, CR and LF escaped."""
    return _PARAM_RE.sub(lambda m: _PARAM_ESCAPES[m.group()], value)


def unescape_param_value(value: str) -> str:
    """Undo ``escape_param_value`` (an unknown escape keeps its character)."""
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def structured_data(sd_id: str, params: Sequence[tuple[str, str | None]]) -> str:
    """One SD-ELEMENT; params with a ``None`` value are left out.

    An escaped value is cut to 128 bytes (on a UTF-8 boundary, never inside an
    escape), so the part before MSG stays far below the 2048-byte UDP budget.
    """
    parts = [sd_name(sd_id)]
    for name, value in params:
        if value is not None:
            escaped = escape_param_value(value).encode("utf-8", "replace")
            cut = _drop_dangling_escape(cut_utf8(escaped, _MAX_PARAM_BYTES))
            parts.append(f'{sd_name(name)}="{cut.decode("utf-8")}"')

    return "[" + " ".join(parts) + "]"


def encode(
    header: Header,
    *,
    severity: int,
    moment: datetime,
    msgid: str,
    sd_id: str,
    params: Sequence[tuple[str, str | None]],
    msg: str,
    bom: bool = False,
    max_bytes: int | None = None,
) -> tuple[bytes, bool]:
    """The whole message and whether it was truncated to fit ``max_bytes``.

    A message over ``max_bytes`` gets ``truncated="true"`` in its structured data
    and its MSG cut on a UTF-8 boundary (never in the middle of a ``\\`` escape).
    The part before MSG is at most about 1000 bytes (header limits plus four
    128-byte params), so any ``max_bytes`` of 1024 or more is always met.
    """
    body = (BOM if bom else b"") + msg.encode("utf-8", "replace")
    prefix = _prefix(header, severity, moment, msgid, sd_id, params)
    if max_bytes is None or len(prefix) + len(body) <= max_bytes:
        return prefix + body, False

    prefix = _prefix(header, severity, moment, msgid, sd_id, [*params, TRUNCATED_PARAM])
    cut = cut_utf8(body, max_bytes - len(prefix))

    return prefix + _drop_dangling_escape(cut), True


def _prefix(
    header: Header,
    severity: int,
    moment: datetime,
    msgid: str,
    sd_id: str,
    params: Sequence[tuple[str, str | None]],
) -> bytes:
    """Everything before MSG, including the SP that separates it."""
    head = " ".join(
        [
            f"<{pri(header.facility, severity)}>1",
            timestamp(moment),
            header_field(header.hostname, 255),
            header_field(header.app_name, 48),
            header_field(header.procid, 128),
            header_field(msgid, 32),
            structured_data(sd_id, params),
        ]
    )

    return (head + " ").encode("utf-8", "replace")


def cut_utf8(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of ``data`` without splitting a UTF-8 sequence."""
    if len(data) <= limit:
        return data
    end = max(limit, 0)
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1

    return data[:end]


def _drop_dangling_escape(data: bytes) -> bytes:
    """Remove a trailing lone backslash left by a cut through ``\\x``."""
    run = len(data) - len(data.rstrip(b"\\"))
    return data[:-1] if run % 2 else data

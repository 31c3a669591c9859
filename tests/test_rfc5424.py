"""RFC 5424 encoding: header rules, SD escaping, truncation; property tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks import rfc5424

HEADER = rfc5424.Header(facility=16, hostname="bb-node-1")
MOMENT = datetime(2026, 9, 25, 12, 0, 0, 5, tzinfo=UTC)
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from('\\"]\r\n =€中'), st.characters(exclude_categories=["Cs"])
    )
)


def encode(msg: str = "{}", **overrides: object) -> tuple[bytes, bool]:
    """A message with defaults for everything but what the test varies."""
    values: dict[str, object] = {
        "severity": 6,
        "moment": MOMENT,
        "msgid": "event",
        "sd_id": rfc5424.DEFAULT_SD_ID,
        "params": [("id", "ev-1")],
        "msg": msg,
    }
    values.update(overrides)
    return rfc5424.encode(HEADER, **values)  # type: ignore[arg-type]


def test_full_message_layout() -> None:
    """PRI, version, UTC timestamp with microseconds, header, SD, then MSG."""
    message, truncated = encode('{"a":1}')

    assert message == (
        b"<134>1 2026-09-25T12:00:00.000005Z bb-node-1 bbaudit - event "
        b'[bbaudit@32473 id="ev-1"] {"a":1}'
    )
    assert not truncated


def test_timestamp_is_converted_to_utc() -> None:
    """An offset timestamp is written in UTC with ``Z``."""
    moment = datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))

    assert rfc5424.timestamp(moment) == "2026-01-01T00:00:00.000000Z"


def test_pri_range_is_checked() -> None:
    """Facility 0..23 and severity 0..7 only."""
    assert rfc5424.pri(23, 7) == 191
    with pytest.raises(ValueError):
        rfc5424.pri(24, 0)


def test_header_fields_are_printable_ascii_and_bounded() -> None:
    """Spaces and non-ASCII become ``_``; limits hold; empty becomes ``-``."""
    assert rfc5424.header_field("bb node ü", 255) == "bb_node__"
    assert rfc5424.header_field("x" * 300, 255) == "x" * 255
    assert rfc5424.header_field("", 48) == "-"
    assert rfc5424.header_field(None, 48) == "-"


def test_bom_is_optional() -> None:
    """With ``bom`` the MSG starts with the UTF-8 BOM."""
    message, _ = encode("ü", bom=True)

    assert message.endswith(b"] \xef\xbb\xbf\xc3\xbc")


def test_truncation_marks_and_respects_the_limit() -> None:
    """A long MSG is cut on a UTF-8 boundary and ``truncated="true"`` is added."""
    message, truncated = encode("€" * 2000, max_bytes=2048)

    assert truncated
    assert len(message) <= 2048
    assert b'truncated="true"]' in message
    message.decode("utf-8")


def test_truncation_never_leaves_a_lone_escape() -> None:
    """A cut through ``\\\\`` does not leave a dangling backslash."""
    prefix, _ = encode("")
    budget = len(prefix) + len(b' truncated="true"') + 3

    message, _ = encode("ab\\\\cd" * 10, max_bytes=budget)

    assert not message.endswith(b"a\\") and not message.endswith(b"b\\")


@given(TEXT)
def test_param_escape_round_trips(value: str) -> None:
    """Escaped values have no CR/LF, no bare ``"`` or ``]``, and unescape back."""
    escaped = rfc5424.escape_param_value(value)

    assert "\r" not in escaped and "\n" not in escaped
    assert not re.search(r'(?<!\\)(\\\\)*["\]]', escaped)
    assert rfc5424.unescape_param_value(escaped) == value


@given(TEXT)
def test_sd_names_follow_the_rfc(name: str) -> None:
    """SD names are 1..32 PRINTUSASCII chars without ``=``, SP, ``]``, ``"``."""
    cleaned = rfc5424.sd_name(name)

    assert 1 <= len(cleaned) <= 32
    assert re.fullmatch(r"[\x21-\x7e]+", cleaned)
    assert not set(cleaned) & set('= ]"')


@given(TEXT, TEXT, TEXT, st.integers(min_value=1024, max_value=4096))
def test_message_is_one_line_and_fits(
    value: str, host: str, msgid: str, limit: int
) -> None:
    """With any values the prefix has no CR/LF and a cut message fits."""
    header = rfc5424.Header(facility=1, hostname=host)
    json_like = value.replace("\r", "\\r").replace("\n", "\\n")

    message, truncated = rfc5424.encode(
        header,
        severity=5,
        moment=MOMENT,
        msgid=msgid,
        sd_id="bbaudit@32473",
        params=[("id", value), ("kind", "event")],
        msg=json_like,
        max_bytes=limit,
    )

    assert b"\n" not in message and b"\r" not in message
    message.decode("utf-8")
    assert len(message) <= limit
    if truncated:
        assert b' truncated="true"] ' in message

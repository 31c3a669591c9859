"""Hostile values in audit events cannot forge syslog messages, structured data
or CEF fields: the output is parsed back strictly and must hold exactly what
went in, in the places it was put."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.model import Actor, AuditEvent, Target
from sinks import cef
from sinks.syslog import SyslogSink, SyslogSinkSettings
from tests.sink_records import make_event

# Pieces an attacker would put in a username, repository name or raw action.
ATTACKS = [
    "\n<13>1 2026-01-01T00:00:00Z evil bbaudit - event - forged",
    "\r\n",
    "\r",
    "\u2028",
    "\u0085",
    '"] [evil@1 admin="true"] ',
    '\\"]',
    "\\",
    "]",
    '"',
    "=",
    "|",
    " suser=root act=repo.deleted",
    " cs1=forged",
    "\\=",
    "\\|",
    "CEF:0|x|y|1|sig|name|10|",
    "\x00",
]
HOSTILE = st.lists(
    st.one_of(st.sampled_from(ATTACKS), st.text(max_size=8)), max_size=6
).map("".join)
SD_ID = "bbaudit@32473"
SD_PARAM_NAMES = ["id", "kind", "action", "outcome"]


def hostile_event(name: str, repo: str, raw_action: str, event_id: str) -> AuditEvent:
    """An audit event with attacker text in every free-text field."""
    base = make_event(1)
    return dataclasses.replace(
        base,
        id=event_id or "ev-1",
        actor=Actor(name=name, kind="human"),
        targets=(Target(type="REPOSITORY", name=repo),),
        raw_action=raw_action,
        user_agent=name,
        attributes={"note": repo},
    )


# ---------------------------------------------------------------- RFC 5424


def parse_rfc5424(message: bytes) -> tuple[list[tuple[str, dict[str, str]]], bytes]:
    """Strictly split a message into its SD elements and MSG; raises on junk."""
    head = re.match(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ", message)
    assert head, message[:120]
    text = message[head.end() :].decode("utf-8")
    elements: list[tuple[str, dict[str, str]]] = []
    at = 0
    while at < len(text) and text[at] == "[":
        element, at = _sd_element(text, at + 1)
        elements.append(element)
    assert text[at : at + 1] == " ", "SD must be followed by SP and MSG"
    return elements, text[at + 1 :].encode("utf-8")


def _sd_element(text: str, at: int) -> tuple[tuple[str, dict[str, str]], int]:
    sd_id = re.match(r'[^ =\]"]{1,32}', text[at:])
    assert sd_id, text[at : at + 40]
    at += sd_id.end()
    params: dict[str, str] = {}
    while text[at] == " ":
        name = re.match(r'([^ =\]"]{1,32})="', text[at + 1 :])
        assert name, text[at : at + 40]
        at += 1 + name.end()
        value: list[str] = []
        while text[at] != '"':
            if text[at] == "\\" and text[at + 1] in '"\\]rn':
                value.append({"r": "\r", "n": "\n"}.get(text[at + 1], text[at + 1]))
                at += 2
                continue
            assert text[at] != "]", "an unescaped ] inside a PARAM-VALUE"
            value.append(text[at])
            at += 1
        params[name.group(1)] = "".join(value)
        at += 1
    assert text[at] == "]", text[at : at + 40]
    return (sd_id.group(), params), at + 1


def syslog_sink(fmt: str = "ecs") -> SyslogSink:
    """A syslog sink (UDP, never connected) used only to encode."""
    return SyslogSink(
        SyslogSinkSettings.model_validate(
            {
                "kind": "syslog",
                "name": "s",
                "host": "127.0.0.1",
                "port": 514,
                "transport": "tcp",
                "format": fmt,
                "hostname": "collector-1",
            }
        )
    )


def strings_in(document: Any) -> list[str]:
    """Every string value in a decoded JSON document."""
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [s for v in document.values() for s in strings_in(v)]
    if isinstance(document, list):
        return [s for v in document for s in strings_in(v)]
    return []


@settings(max_examples=300, deadline=None)
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE)
def test_syslog_message_cannot_be_split_or_its_sd_closed_early(
    name: str, repo: str, raw_action: str, event_id: str
) -> None:
    """One message, one SD element with our four params, and a JSON MSG that
    holds the hostile values intact."""
    event = hostile_event(name, repo, raw_action, event_id)

    message = syslog_sink().encode(event)

    assert b"\n" not in message and b"\r" not in message
    elements, msg = parse_rfc5424(message)
    # The JSON MSG escapes the Unicode line separators too (some readers split
    # on them); SD values may carry them, which RFC 5424 allows.
    assert "\u2028".encode() not in msg and "\u0085".encode() not in msg
    assert [e[0] for e in elements] == [SD_ID]
    params = elements[0][1]
    assert list(params) == SD_PARAM_NAMES
    assert event.id.startswith(params["id"])
    values = strings_in(orjson.loads(msg))
    assert event.id in values
    assert not name or name in values


@settings(max_examples=200, deadline=None)
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE)
def test_syslog_cef_message_keeps_one_sd_element(
    name: str, repo: str, raw_action: str, event_id: str
) -> None:
    """With CEF as MSG the syslog frame is still one line with one SD element."""
    event = hostile_event(name, repo, raw_action, event_id)

    message = syslog_sink("cef").encode(event)

    assert b"\n" not in message and b"\r" not in message
    elements, msg = parse_rfc5424(message)
    assert [e[0] for e in elements] == [SD_ID]
    assert parse_cef(msg.decode("utf-8"))[1]["suser"] == name


# ---------------------------------------------------------------- CEF


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Strictly split a CEF line into 7 header fields and the extension pairs."""
    fields: list[str] = []
    current: list[str] = []
    at = 0
    while len(fields) < 7:
        char = line[at]
        if char == "\\":
            current.append(line[at : at + 2])
            at += 2
            continue
        if char == "|":
            fields.append(cef.unescape("".join(current)))
            current = []
        else:
            current.append(char)
        at += 1
    assert fields[0] == "CEF:0", fields
    return fields[1:], _extension(line[at:])


def _extension(text: str) -> dict[str, str]:
    """Pairs split at every unescaped ``=``: a key is the word before it."""
    cuts: list[int] = []
    at = 0
    while at < len(text):
        if text[at] == "\\":
            at += 2
            continue
        if text[at] == "=":
            cuts.append(at)
        at += 1
    pairs: dict[str, str] = {}
    start_of_key = 0
    for index, cut in enumerate(cuts):
        key = text[start_of_key:cut]
        assert re.fullmatch(r"[A-Za-z0-9]+", key), f"bad key {key!r} in {text!r}"
        assert key not in pairs, f"key {key} twice in {text!r}"
        end = len(text)
        if index + 1 < len(cuts):
            end = text.rindex(" ", cut, cuts[index + 1])
        pairs[key] = cef.unescape(text[cut + 1 : end])
        start_of_key = end + 1
    return pairs


@settings(max_examples=300, deadline=None)
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE)
def test_cef_event_fields_cannot_be_forged(
    name: str, repo: str, raw_action: str, event_id: str
) -> None:
    """Seven header fields, exactly our extension keys, values intact."""
    event = hostile_event(name, repo, raw_action, event_id)
    expected_keys = {k for k, v in _event_pairs(event) if v is not None}

    line = cef.format_event(event)

    assert "\n" not in line and "\r" not in line
    header, extension = parse_cef(line)
    assert len(header) == 6
    assert set(extension) == expected_keys
    assert extension["suser"] == name
    assert extension["externalId"] == event.id
    assert extension["cs2"] == raw_action or not raw_action
    assert extension["cs1"] == f"REPOSITORY:{repo}"


@settings(max_examples=200, deadline=None)
@given(HOSTILE, HOSTILE)
def test_cef_header_cannot_gain_a_field(signature: str, title: str) -> None:
    """A hostile signature id or name stays inside its own header field."""
    line = cef.format_line(signature, title, 5, [("msg", title)])

    header, extension = parse_cef(line)

    assert header[3:5] == [signature, title]
    assert extension == {"msg": title}


def _event_pairs(event: AuditEvent) -> list[tuple[str, str | None]]:
    """The extension pairs ``format_event`` writes, by reading its output keys
    for a harmless copy of the event (so this test tracks the encoder)."""
    harmless = dataclasses.replace(
        event,
        id="i",
        actor=Actor(name="n", kind="human"),
        targets=(Target(type="REPOSITORY", name="r"),),
        raw_action="a" if event.raw_action else event.raw_action,
        user_agent="n",
    )
    return list(parse_cef(cef.format_event(harmless))[1].items())

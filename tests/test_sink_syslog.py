"""The syslog sink against rsyslog on loopback: UDP, TCP and TLS."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

import pytest

from collector.errors import SinkError
from collector.model import Record
from sinks import cef
from sinks.syslog import SyslogSink, SyslogSinkSettings
from tests.conftest import closes_after_each_test
from tests.sink_records import make_alert, make_event
from tests.syslog_receivers import Rsyslog, loopback_settings, pki, rsyslog

__all__ = ["pki", "rsyslog"]  # fixtures used by name below

AWKWARD = 'a\nb\r\nc | d = e ] f " g \\ h ü 中 🙂 \u2028 end'
BIG = "x€" * 7000  # about 21 KB of UTF-8
_SD = re.compile(r'\[bbaudit@32473 id="([^"]+)"')

_OPEN: list[SyslogSink] = []


close_sinks = closes_after_each_test(_OPEN)


def make_sink(port: int, transport: str, **overrides: Any) -> SyslogSink:
    """A sink to 127.0.0.1:``port``."""
    sink = SyslogSink(loopback_settings(port, transport, **overrides))
    _OPEN.append(sink)
    return sink


def split_message(line: str) -> tuple[list[str], str, str]:
    """(header fields, structured data, MSG) of one raw RFC 5424 message."""
    parts = line.split(" ", 6)
    header, rest = parts[:6], parts[6]
    index, escaped = 0, False
    depth = 0
    while index < len(rest):
        char = rest[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0 and (index + 1 == len(rest) or rest[index + 1] == " "):
                break
        index += 1
    return header, rest[: index + 1], rest[index + 2 :]


def record_ids(lines: list[str]) -> list[str]:
    """The ``id`` SD-PARAM of every message."""
    return [m.group(1) for line in lines if (m := _SD.search(line))]


async def test_tcp_delivers_every_record_once(rsyslog: Rsyslog) -> None:
    """Over TCP with octet counting, rsyslog writes exactly one line per record."""
    sink = make_sink(rsyslog.tcp_port, "tcp")
    records: list[Record] = [make_event(i, note=AWKWARD) for i in range(200)]

    await sink.send(records[:100])
    await sink.send(records[100:])
    lines = await rsyslog.wait_for(200)
    await asyncio.sleep(0.3)

    assert len(rsyslog.lines()) == 200
    assert record_ids(lines) == [r.id for r in records]
    assert all(p.startswith("bbaudit event [bbaudit@32473") for p in rsyslog.parsed())


async def test_awkward_values_arrive_intact_over_tcp(rsyslog: Rsyslog) -> None:
    """Newlines, |, =, ], quotes, non-ASCII and 20 KB values survive unchanged."""
    sink = make_sink(
        rsyslog.tcp_port, "tcp", alerts_as_cef=True, max_stream_bytes="200KiB"
    )
    event = make_event(1, note=AWKWARD + BIG)
    alert = make_alert(2, note=AWKWARD)

    await sink.send([event, alert])
    lines = await rsyslog.wait_for(2)

    assert len(lines) == 2
    header, _, msg = split_message(lines[0])
    assert header[:2] == ["<134>1", "2026-09-25T12:00:01.123456Z"]
    assert header[2:] == ["bb-test", "bbaudit", "-", "event"]
    assert json.loads(msg)["attributes"]["note"] == AWKWARD + BIG
    _, _, cef_line = split_message(lines[1])
    assert cef_line.startswith("CEF:0|bbaudit|bbaudit|0.1|bb.mass_clone|")
    summary = re.search(r" msg=(.*?) suser=", cef_line)
    assert summary is not None
    assert cef.unescape(summary.group(1)) == "Many clones" + AWKWARD


async def test_tls_with_verification(rsyslog: Rsyslog) -> None:
    """TLS verifies rsyslog's certificate against the configured CA."""
    sink = make_sink(
        rsyslog.tls_port,
        "tls",
        ca_file=str(rsyslog.pki.ca),
        server_name="localhost",
    )
    records = [make_event(i, note=AWKWARD) for i in range(50)]

    await sink.send(records)
    lines = await rsyslog.wait_for(50)

    assert record_ids(lines) == [r.id for r in records]
    assert sink.healthy


async def test_tls_with_wrong_ca_fails(rsyslog: Rsyslog) -> None:
    """A server certificate from another CA is a permanent error; nothing is sent."""
    sink = make_sink(rsyslog.tls_port, "tls", ca_file=str(rsyslog.pki.other_ca))

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])
    await asyncio.sleep(0.3)

    assert not caught.value.retriable
    assert not sink.healthy
    assert rsyslog.lines() == []


async def test_udp_truncates_on_a_utf8_boundary(rsyslog: Rsyslog) -> None:
    """A UDP message over 2048 bytes is cut on a UTF-8 boundary and marked."""
    sink = make_sink(rsyslog.udp_port, "udp")
    small, large = make_event(1, note=AWKWARD), make_event(2, note=BIG)

    await sink.send([small, large])
    lines = await rsyslog.wait_for(2)

    assert record_ids(lines) == ["ev-000001", "ev-000002"]
    assert 'truncated="true"' not in lines[0]
    assert 'truncated="true"' in lines[1]
    assert len(lines[1].encode("utf-8")) <= 2048
    assert "\ufffd" not in lines[1]
    _, _, msg = split_message(lines[0])
    assert json.loads(msg)["attributes"]["note"] == AWKWARD


async def test_udp_and_stream_encode_the_same_record(rsyslog: Rsyslog) -> None:
    """Alerts as CEF over UDP keep one line per alert too."""
    sink = make_sink(rsyslog.udp_port, "udp")
    alerts = [make_alert(i, note=AWKWARD) for i in range(20)]

    await sink.send(alerts)
    lines = await rsyslog.wait_for(20)
    await asyncio.sleep(0.2)

    assert len(rsyslog.lines()) == 20
    assert sorted(record_ids(lines)) == [a.id for a in alerts]
    assert all(" alert [bbaudit@32473" in p for p in rsyslog.parsed())


async def test_refused_connection_is_retriable() -> None:
    """Nobody listening gives a retriable error."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    sink = make_sink(port, "tcp")

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])

    assert caught.value.retriable


async def test_reconnects_after_the_receiver_closed() -> None:
    """When the receiver closes the connection, the next batch uses a new one."""
    received: list[bytes] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        received.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = make_sink(port, "tcp")

    await sink.send([make_event(1)])
    await asyncio.sleep(0.2)
    await sink.send([make_event(2)])
    await asyncio.sleep(0.2)
    server.close()
    await server.wait_closed()

    assert connections == 2
    assert [b"ev-000001" in received[0], b"ev-000002" in received[1]] == [True, True]
    assert re.match(rb"\d+ <134>1 ", received[0])


def test_stream_messages_are_capped_and_marked() -> None:
    """Over TCP/TLS a message beyond ``max_stream_bytes`` is cut and marked too."""
    sink = make_sink(1, "tcp")

    message = sink.encode(make_event(1, note=BIG * 4))

    assert len(message) <= 64 * 1024
    assert b' truncated="true"] ' in message
    message.decode("utf-8")


def test_unknown_facility_is_a_config_error() -> None:
    """A facility name that syslog does not define is refused."""
    with pytest.raises(ValueError, match="unknown facility"):
        SyslogSinkSettings(kind="syslog", host="127.0.0.1", facility="local9")


def test_alert_severity_maps_to_syslog_severity() -> None:
    """A high alert is ``err`` (PRI 16*8+3) and a failed event ``notice``."""
    sink = make_sink(1, "udp", facility="local0")
    failed = replace(make_event(1), outcome="failure")

    assert sink.encode(make_alert(1)).startswith(b"<131>1 ")
    assert sink.encode(failed).startswith(b"<133>1 ")

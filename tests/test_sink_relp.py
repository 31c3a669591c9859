"""The syslog sink over RELP: against rsyslog's imrelp and against a mock server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from collector.errors import SinkError, SinkUnavailableError
from collector.metrics import Metrics
from collector.model import Record
from sinks import cef
from sinks.delivery import DeliveryChannel
from sinks.relp import MAX_TXNR, FrameParser, RelpProtocolError, encode_frame
from sinks.syslog import SyslogSink, SyslogSinkSettings
from tests.conftest import closes_after_each_test
from tests.sink_records import make_alert, make_event
from tests.syslog_receivers import Rsyslog, loopback_settings, pki, rsyslog

__all__ = ["pki", "rsyslog"]  # fixtures used by name below

AWKWARD = 'a\nb\r\nc | d = e ] f " g \\ h ü 中 🙂 \u2028 end'
BIG = "x€" * 7000  # about 21 KB of UTF-8
_ID = re.compile(rb'\[bbaudit@32473 id="([^"]+)"')
OK = b"200 OK"

# What the mock answers to one syslog frame: (connection number, txnr, message)
# -> bytes to write (may be junk), None for silence, or CLOSE to hang up.
Behaviour = Callable[[int, int, bytes], bytes | None]
CLOSE = b"<close>"

_OPEN: list[SyslogSink] = []


close_sinks = closes_after_each_test(_OPEN)


def settings(
    port: int, transport: str = "relp", **overrides: Any
) -> SyslogSinkSettings:
    """RELP sink settings to 127.0.0.1:``port``."""
    return loopback_settings(port, transport, **overrides)


def make_sink(port: int, transport: str = "relp", **overrides: Any) -> SyslogSink:
    """A RELP sink to 127.0.0.1:``port``, closed after the test."""
    sink = SyslogSink(settings(port, transport, **overrides))
    _OPEN.append(sink)
    return sink


def rsp(txnr: int, data: bytes = OK) -> bytes:
    """An ``rsp`` frame."""
    return encode_frame(txnr, b"rsp", data)


class MockRelp:
    """A loopback RELP server whose answers to syslog frames a test chooses.

    It parses frames with its own small reader (not ``sinks.relp``), answers
    ``open`` and ``close`` itself, and records every syslog message it got.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.messages: list[bytes] = []
        self.txnrs: list[int] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def ids(self) -> list[str]:
        """The record id of each message received, in order."""
        return [m.group(1).decode() for x in self.messages if (m := _ID.search(x))]

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def aclose(self) -> None:
        """Stop listening and drop every connection."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while (frame := await _read_frame(reader)) is not None:
                reply = self._answer(number, *frame)
                if reply == CLOSE:
                    break
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    def _answer(self, number: int, txnr: int, command: bytes, data: bytes) -> Any:
        if command == b"open":
            return rsp(txnr, OK + b"\nrelp_version=0\ncommands=syslog")
        if command == b"close":
            return rsp(txnr, b"") + b"0 serverclose 0\n"
        self.messages.append(data)
        self.txnrs.append(txnr)
        return self.behaviour(number, txnr, data)


async def _read_frame(
    reader: asyncio.StreamReader,
) -> tuple[int, bytes, bytes] | None:
    head = await reader.readuntil(b" ")
    command = (await reader.readuntil(b" "))[:-1]
    digits = b""
    while (char := await reader.readexactly(1)) not in b" \n":
        digits += char
    data = await reader.readexactly(int(digits)) if char == b" " else b""
    if char == b" ":
        assert await reader.readexactly(1) == b"\n"
    return int(head[:-1]), command, data


async def started(behaviour: Behaviour) -> MockRelp:
    """A started mock server."""
    server = MockRelp(behaviour)
    await server.start()
    return server


def fast_channel(port: int, **overrides: Any) -> DeliveryChannel:
    """A delivery channel around a RELP sink, retrying quickly, without spool."""
    values: dict[str, Any] = {
        "timeout": 2,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "batch_max_wait": 0.01,
        **overrides,
    }
    config = settings(port, **values)
    return DeliveryChannel(SyslogSink(config), config, Metrics())


async def deliver(channel: DeliveryChannel, records: list[Record]) -> None:
    """Submit records and wait until the channel says they are durable."""
    await channel.start()
    try:
        await channel.submit(records, lambda: None)
        await asyncio.wait_for(channel.drain(), 15)
    finally:
        await channel.aclose()


# ---- frames ----


def test_parser_cuts_frames_fed_byte_by_byte() -> None:
    """Frames split anywhere come out whole, with empty and non-empty data."""
    stream = rsp(7, OK) + b"0 serverclose 0\n" + rsp(8, b"500 no\nmore")
    parser = FrameParser()

    frames = [f for i in range(len(stream)) for f in parser.feed(stream[i : i + 1])]

    assert [(f.txnr, f.command, f.data) for f in frames] == [
        (7, b"rsp", OK),
        (0, b"serverclose", b""),
        (8, b"rsp", b"500 no\nmore"),
    ]


@pytest.mark.parametrize(
    "junk",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"12345678901 rsp 6 200 OK\n",
        b"1 rsp 70000 ",
        b"1 rsp 6 200 OKX",
        b"1 RSP 6 200 OK\n",
        b"1 rsp 6\n",
        b"01 rsp 6 200 OK\n",
        b"1 " + b"r" * 40,
    ],
)
def test_parser_refuses_what_is_not_relp(junk: bytes) -> None:
    """Junk, overlong fields and oversize data are errors, not growing buffers."""
    with pytest.raises(RelpProtocolError):
        FrameParser().feed(junk)


def test_transport_and_port_settings() -> None:
    """``relp`` defaults to port 2514; an explicit port and other transports stay."""
    relp = SyslogSinkSettings(kind="syslog", host="h", transport="relp_tls")
    tls = SyslogSinkSettings(kind="syslog", host="h", transport="tls")

    assert (relp.port, tls.port, relp.relp_window) == (2514, 6514, 128)


# ---- against rsyslog's imrelp ----


async def test_awkward_values_arrive_intact_over_relp(rsyslog: Rsyslog) -> None:
    """Newlines, |, =, ], quotes, non-ASCII and 20 KB values survive unchanged."""
    sink = make_sink(rsyslog.relp_port, max_stream_bytes="200KiB")
    event = make_event(1, note=AWKWARD + BIG)
    alert = make_alert(2, note=AWKWARD)
    records: list[Record] = [event, alert, make_event(3, note=AWKWARD)]

    await sink.send(records)
    lines = await rsyslog.wait_for(3)

    assert len(lines) == 3
    assert 'truncated="true"' not in lines[0]
    documents = [json.loads(line.split("] ", 1)[1]) for line in (lines[0], lines[2])]
    assert documents[0]["attributes"]["note"] == AWKWARD + BIG
    assert documents[1]["attributes"]["note"] == AWKWARD
    summary = re.search(r" msg=(.*?) suser=", lines[1])
    assert summary is not None
    assert cef.unescape(summary.group(1)) == "Many clones" + AWKWARD
    assert all(p.startswith("bbaudit ") for p in rsyslog.parsed())


async def test_relp_tls_with_verification(rsyslog: Rsyslog) -> None:
    """RELP over TLS verifies rsyslog's certificate and confirms every message."""
    sink = make_sink(
        rsyslog.relp_tls_port,
        "relp_tls",
        ca_file=str(rsyslog.pki.ca),
        server_name="localhost",
    )
    records: list[Record] = [make_event(i, note=AWKWARD) for i in range(300)]

    await sink.send(records)
    await rsyslog.wait_for(len(records))

    assert _ids(rsyslog) == [r.id for r in records]
    assert sink.healthy


async def test_relp_tls_with_wrong_ca_fails(rsyslog: Rsyslog) -> None:
    """A server certificate from another CA is a permanent error; nothing is sent."""
    sink = make_sink(
        rsyslog.relp_tls_port, "relp_tls", ca_file=str(rsyslog.pki.other_ca)
    )

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])
    await asyncio.sleep(0.3)

    assert not caught.value.retriable
    assert not sink.healthy
    assert rsyslog.lines() == []


async def test_send_returns_only_after_rsyslog_took_everything(
    rsyslog: Rsyslog,
) -> None:
    """Once send returns, rsyslog has every message: a stop right after loses none."""
    sink = make_sink(rsyslog.relp_port, relp_window=16)
    records: list[Record] = [make_event(i) for i in range(2000)]

    await sink.send(records)
    await asyncio.to_thread(rsyslog.stop)

    assert _ids(rsyslog) == [r.id for r in records]


# ---- against the mock server ----


async def test_refused_message_fails_the_batch_and_is_retried() -> None:
    """A non-200 answer fails the batch; the retry resends only the refused one."""
    refused: set[int] = set()

    def behaviour(number: int, txnr: int, message: bytes) -> bytes:
        if b'id="ev-000003"' in message and not refused:
            refused.add(txnr)
            return rsp(txnr, b"500 queue full")
        return rsp(txnr)

    server = await started(behaviour)
    records: list[Record] = [make_event(i) for i in range(6)]
    try:
        sink = make_sink(server.port, timeout=2)
        with pytest.raises(SinkUnavailableError, match=r"1 refused.*500 queue full"):
            await sink.send(records)
        await sink.send(records)
    finally:
        await server.aclose()

    assert server.ids() == [r.id for r in records] + ["ev-000003"]


async def test_refusals_through_delivery_lose_nothing() -> None:
    """Behind the delivery channel, refused messages are retried until taken once."""
    count = 0
    accepted: list[str] = []

    def behaviour(number: int, txnr: int, message: bytes) -> bytes:
        nonlocal count
        count += 1
        if count % 7 == 0:
            return rsp(txnr, b"503 busy")
        match = _ID.search(message)
        assert match is not None
        accepted.append(match.group(1).decode())
        return rsp(txnr)

    server = await started(behaviour)
    records: list[Record] = [make_event(i) for i in range(300)]
    try:
        await deliver(fast_channel(server.port, batch_max_records=50), records)
    finally:
        await server.aclose()

    assert sorted(accepted) == [r.id for r in records]
    assert len(server.ids()) > len(records)


async def test_serverclose_mid_batch_loses_nothing() -> None:
    """``serverclose`` after a few answers: the unanswered rest is sent again."""

    def behaviour(number: int, txnr: int, message: bytes) -> bytes:
        if number == 1 and txnr == 5:
            return b"0 serverclose 0\n"
        return rsp(txnr)

    server = await started(behaviour)
    records: list[Record] = [make_event(i) for i in range(100)]
    try:
        await deliver(fast_channel(server.port, relp_window=8), records)
    finally:
        await server.aclose()

    ids = server.ids()
    assert set(ids) == {r.id for r in records}
    assert len(ids) - len(records) <= 8
    assert server.connections == 2


async def test_hang_up_without_answers_is_retriable() -> None:
    """A receiver that closes the connection unanswered fails the batch, retriably."""
    server = await started(lambda number, txnr, message: CLOSE)
    try:
        sink = make_sink(server.port, timeout=2)
        with pytest.raises(SinkUnavailableError, match="unanswered"):
            await sink.send([make_event(1), make_event(2)])
    finally:
        await server.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        b"this is not relp\n",
        b"%d rsp 99999999 ",
        b"%d rsp 6 200 OKjunk",
        b"%d rsp 2 OK\n",
        b"%d syslog 2 hi\n",
        b"77 rsp 6 200 OK\n",
        b"\x00" * 200,
    ],
)
async def test_junk_answers_fail_the_batch_cleanly(answer: bytes) -> None:
    """Junk, oversize or unexpected frames close the session with a clear error."""

    def behaviour(number: int, txnr: int, message: bytes) -> bytes:
        return answer.replace(b"%d", str(txnr).encode())

    server = await started(behaviour)
    sink = make_sink(server.port, timeout=2)
    began = time.monotonic()
    try:
        with pytest.raises(SinkUnavailableError, match=r"malformed reply|no relp"):
            await sink.send([make_event(1)])
    finally:
        await server.aclose()

    assert time.monotonic() - began < 3
    assert sink.healthy


async def test_silent_receiver_hits_the_deadline() -> None:
    """No answer within ``timeout`` fails the batch instead of hanging."""
    server = await started(lambda number, txnr, message: None)
    sink = make_sink(server.port, timeout=0.5)
    began = time.monotonic()
    try:
        with pytest.raises(SinkUnavailableError, match="no relp answer"):
            await sink.send([make_event(1), make_event(2)])
    finally:
        await server.aclose()

    assert time.monotonic() - began < 2


async def test_refused_session_is_permanent() -> None:
    """A receiver that refuses ``open`` is a configuration problem, not retried."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b" ")
        writer.write(rsp(int(head[:-1]), b"500 unsupported relp_version"))
        await writer.drain()
        await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = make_sink(port, timeout=2)
    try:
        with pytest.raises(SinkError, match="refused: 500") as caught:
            await sink.send([make_event(1)])
    finally:
        server.close()
        await server.wait_closed()

    assert not caught.value.retriable


async def test_txnr_wraps_to_one() -> None:
    """After 999999999 the transaction number starts again at 1."""
    server = await started(lambda number, txnr, message: rsp(txnr))
    sink = make_sink(server.port)
    try:
        await sink.send([make_event(0)])
        session = sink._transport._session  # type: ignore[attr-defined]
        session._txnr = MAX_TXNR - 1
        await sink.send([make_event(i) for i in range(1, 4)])
    finally:
        await sink.aclose()
        await server.aclose()

    assert server.txnrs == [2, MAX_TXNR, 1, 2]
    assert len(server.ids()) == 4


def _ids(receiver: Rsyslog) -> list[str]:
    lines = [line.encode() for line in receiver.lines()]
    return [m.group(1).decode() for line in lines if (m := _ID.search(line))]


async def test_cancelled_send_starts_a_new_session() -> None:
    """A send cancelled by the caller's deadline leaves no stale session behind."""

    def behaviour(number: int, txnr: int, message: bytes) -> bytes | None:
        return None if number == 1 else rsp(txnr)

    server = await started(behaviour)
    sink = make_sink(server.port, timeout=5)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await sink.send([make_event(1)])
        await sink.send([make_event(1), make_event(2)])
    finally:
        await server.aclose()

    assert server.connections == 2
    assert server.ids() == ["ev-000001", "ev-000001", "ev-000002"]

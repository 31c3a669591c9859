"""A hostile loopback RELP server against sinks.relp and the syslog sink.

Invariant checked in every case: ``send`` returns normally only if the server
really answered ``200`` (with the right txnr) to every message it was given;
otherwise it raises, within a bounded time, and leaves no reader task behind.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from collector.errors import SinkError, SinkUnavailableError
from sinks.relp import _Session
from sinks.syslog import SyslogSink, SyslogSinkSettings
from tests.sink_records import make_event

_ID = re.compile(rb'\[bbaudit@32473 id="([^"]+)"')
OPEN_OK = b"200 OK\nrelp_version=0\ncommands=syslog"
TIMEOUT = 1.0

Script = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, "Hostile"], Awaitable[None]
]


def frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """One raw RELP frame."""
    head = b"%d %s %d" % (txnr, command, len(data))
    return head + b" " + data + b"\n" if data else head + b"\n"


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """Our own strict frame reader (does not reuse sinks.relp)."""
    txnr = int((await reader.readuntil(b" "))[:-1])
    command = (await reader.readuntil(b" "))[:-1]
    digits = b""
    while (char := await reader.readexactly(1)) not in b" \n":
        digits += char
    data = b""
    if char == b" ":
        data = await reader.readexactly(int(digits))
        assert await reader.readexactly(1) == b"\n"
    return txnr, command, data


class Hostile:
    """A server running ``script`` per connection; records what it 200-acked."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.acked: list[str] = []
        self.received: list[str] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Hostile:
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        try:
            await self.script(r, w, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def opened(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Answer the ``open`` normally."""
        txnr, command, _ = await read_frame(r)
        assert command == b"open"
        w.write(frame(txnr, b"rsp", OPEN_OK))
        await w.drain()

    def note(self, data: bytes, *, ack: bool) -> None:
        match = _ID.search(data)
        assert match is not None
        self.received.append(match.group(1).decode())
        if ack:
            self.acked.append(match.group(1).decode())


def make_sink(port: int, **overrides: Any) -> SyslogSink:
    values: dict[str, Any] = {
        "kind": "syslog",
        "name": "syslog",
        "host": "127.0.0.1",
        "port": port,
        "transport": "relp",
        "hostname": "h",
        "timeout": TIMEOUT,
        "format": "raw",
        **overrides,
    }
    return SyslogSink(SyslogSinkSettings(**values))


def sessions_alive() -> int:
    """Reader tasks of RELP sessions still running."""
    return sum(
        1
        for t in asyncio.all_tasks()
        if not t.done() and "_read_loop" in repr(t.get_coro())
    )


async def attempt(server: Hostile, count: int, **overrides: Any) -> tuple[Any, float]:
    """One ``send`` of ``count`` events; (exception or None, seconds)."""
    sink = make_sink(server.port, **overrides)
    records = [make_event(i) for i in range(count)]
    began = time.monotonic()
    error: BaseException | None = None
    try:
        await asyncio.wait_for(sink.send(records), 30)
    except (SinkError, TimeoutError) as exc:
        error = exc
    took = time.monotonic() - began
    if error is None:
        # the invariant: every message was 200-acked by the server
        assert sorted(server.acked) == sorted(r.id for r in records), (
            "send returned but not every message was acked 200"
        )
    await sink.aclose()
    await asyncio.sleep(0.05)
    gc.collect()
    assert sessions_alive() == 0, "a RELP reader task outlived aclose"
    return error, took


# ---- scripts ---------------------------------------------------------------


def answer_each(reply: Callable[[int, bytes, Hostile], bytes]) -> Script:
    """Open normally; then write ``reply(txnr, data)`` for each syslog frame."""

    async def script(r: Any, w: Any, s: Hostile) -> None:
        await s.opened(r, w)
        while True:
            txnr, command, data = await read_frame(r)
            if command == b"close":
                w.write(frame(txnr, b"rsp") + b"0 serverclose 0\n")
                await w.drain()
                return
            out = reply(txnr, data, s)
            if out:
                w.write(out)
                await w.drain()

    return script


def ok(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=True)
    return frame(txnr, b"rsp", b"200 OK")


def wrong_txnr(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return frame(txnr + 1, b"rsp", b"200 OK")


def duplicated(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=True)
    return frame(txnr, b"rsp", b"200 OK") * 2


def unknown_txnr(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return frame(txnr + 1000, b"rsp", b"200 OK")


def huge_len(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return b"%d rsp 999999999 200 OK" % txnr + b"x" * 1000


def negative_len(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return b"%d rsp -6 200 OK\n" % txnr


def alpha_len(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return b"%d rsp six 200 OK\n" % txnr


def no_trailer(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return b"%d rsp 6 200 OK" % txnr


def ok_then_garbage(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=True)
    return frame(txnr, b"rsp", b"200 OK") + b"\x00garbage\xff\n"


def non_utf8_text(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=True)
    return frame(txnr, b"rsp", b"200 \xff\xfe\xc3(")


def code_2000(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return frame(txnr, b"rsp", b"2000 OK")


def code_200_no_space(txnr: int, data: bytes, s: Hostile) -> bytes:
    s.note(data, ack=False)
    return frame(txnr, b"rsp", b"200OK")


def serverclose_after_two(txnr: int, data: bytes, s: Hostile) -> bytes:
    if len(s.received) >= 2:
        s.note(data, ack=False)
        return b"0 serverclose 0\n"
    s.note(data, ack=True)
    return frame(txnr, b"rsp", b"200 OK")


async def byte_by_byte(r: Any, w: Any, s: Hostile) -> None:
    txnr, _, _ = await read_frame(r)
    for byte in frame(txnr, b"rsp", OPEN_OK):
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(0.001)
    while True:
        txnr, command, data = await read_frame(r)
        if command == b"close":
            return
        s.note(data, ack=True)
        for byte in frame(txnr, b"rsp", b"200 OK"):
            w.write(bytes([byte]))
            await w.drain()
            await asyncio.sleep(0.001)


async def slowloris(r: Any, w: Any, s: Hostile) -> None:
    """One byte every 0.3 s (timeout is 1 s, a whole answer takes 4.5 s)."""
    await s.opened(r, w)
    txnr, _command, data = await read_frame(r)
    s.note(data, ack=False)
    for byte in frame(txnr, b"rsp", b"200 OK"):
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(0.3)


async def drip_answers(r: Any, w: Any, s: Hostile) -> None:
    """Each answer whole, but 0.8 s apart (under the 1 s timeout)."""
    await s.opened(r, w)
    while True:
        txnr, command, data = await read_frame(r)
        if command == b"close":
            return
        await asyncio.sleep(0.8)
        s.note(data, ack=True)
        w.write(frame(txnr, b"rsp", b"200 OK"))
        await w.drain()


async def silent_open(r: Any, w: Any, s: Hostile) -> None:
    await r.read(65536)
    await asyncio.sleep(60)


async def ack_on_header(r: Any, w: Any, s: Hostile) -> None:
    """Acks once it saw the header, before the message body arrived."""
    await s.opened(r, w)
    txnr = int((await r.readuntil(b" "))[:-1])
    w.write(frame(txnr, b"rsp", b"200 OK"))
    await w.drain()
    await asyncio.sleep(60)


async def serverclose_on_open(r: Any, w: Any, s: Hostile) -> None:
    txnr, _, _ = await read_frame(r)
    w.write(frame(txnr, b"rsp", OPEN_OK) + b"0 serverclose 0\n")
    await w.drain()


async def open_without_syslog(r: Any, w: Any, s: Hostile) -> None:
    txnr, _, _ = await read_frame(r)
    w.write(frame(txnr, b"rsp", b"200 OK\nrelp_version=0\ncommands=foo"))
    await w.drain()
    await asyncio.sleep(5)


async def open_rsp_wrong_txnr(r: Any, w: Any, s: Hostile) -> None:
    txnr, _, _ = await read_frame(r)
    w.write(frame(txnr + 5, b"rsp", OPEN_OK))
    await w.drain()
    await asyncio.sleep(5)


# ---- cases -----------------------------------------------------------------

MUST_FAIL = [
    ("wrong_txnr", answer_each(wrong_txnr)),
    ("duplicated_rsp", answer_each(duplicated)),
    ("unknown_txnr", answer_each(unknown_txnr)),
    ("huge_datalen", answer_each(huge_len)),
    ("negative_datalen", answer_each(negative_len)),
    ("alpha_datalen", answer_each(alpha_len)),
    ("missing_trailer", answer_each(no_trailer)),
    ("ok_then_garbage", answer_each(ok_then_garbage)),
    ("code_2000", answer_each(code_2000)),
    ("code_200_no_space", answer_each(code_200_no_space)),
    ("serverclose_mid", answer_each(serverclose_after_two)),
    ("slowloris", slowloris),
    ("silent_open", silent_open),
    ("serverclose_on_open", serverclose_on_open),
    ("open_without_syslog", open_without_syslog),
    ("open_rsp_wrong_txnr", open_rsp_wrong_txnr),
]


@pytest.mark.parametrize("name,script", MUST_FAIL, ids=[n for n, _ in MUST_FAIL])
async def test_hostile_reply_never_counts_as_delivered(
    name: str, script: Script
) -> None:
    """Each hostile answer fails the send within a few timeouts; no task leaks."""
    async with Hostile(script) as server:
        error, took = await attempt(server, 5)

    # duplicated_rsp / ok_then_garbage may legitimately succeed for 1 message,
    # but with 5 messages the second frame breaks the session.
    assert error is not None, f"{name}: send returned though not all were acked"
    assert took < 4 * TIMEOUT + 1, f"{name}: took {took:.1f}s"


@pytest.mark.parametrize(
    "name,script",
    [
        ("byte_by_byte", byte_by_byte),
        ("non_utf8_text", answer_each(non_utf8_text)),
        ("plain_ok", answer_each(ok)),
    ],
)
async def test_odd_but_valid_answers_deliver(name: str, script: Script) -> None:
    """Valid RELP split across segments or with odd text delivers everything."""
    async with Hostile(script) as server:
        error, _ = await attempt(server, 20)
    assert error is None, f"{name}: {error!r}"


async def test_drip_answers_exceed_timeout_by_far() -> None:
    """Answers 0.8 s apart under a 1 s timeout: how long does one send take?"""
    async with Hostile(drip_answers) as server:
        error, took = await attempt(server, 8, relp_window=1)
    # Documents: send of N messages may last N * (timeout - e); only the
    # delivery channel's send_timeout (default 30 s) bounds it.
    print(f"drip: error={error!r} took={took:.1f}s")
    assert error is None
    assert took > 6


async def test_ack_before_body_is_trusted() -> None:
    """A receiver that acks on the header alone: the client cannot tell (documented)."""
    async with Hostile(ack_on_header) as server:
        sink = make_sink(server.port)
        await sink.send([make_event(1)])
        await sink.aclose()


async def test_retry_after_partial_acks_skips_only_confirmed() -> None:
    """After serverclose mid-batch, the resend delivers the rest; none missing."""
    async with Hostile(answer_each(serverclose_after_two)) as server:
        sink = make_sink(server.port)
        records = [make_event(i) for i in range(6)]
        for _ in range(10):
            try:
                await sink.send(records)
                break
            except SinkUnavailableError:
                server.received.clear()  # every new connection acks two
        await sink.aclose()
    assert sorted(set(server.acked)) == sorted(r.id for r in records)


async def test_session_reader_stops_after_abort() -> None:
    """A dropped session (cancelled send) leaves no running reader task."""
    async with Hostile(answer_each(lambda t, d, s: b"")) as server:
        sink = make_sink(server.port, timeout=5)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await sink.send([make_event(1)])
        await asyncio.sleep(0.1)
        assert sessions_alive() == 0
        await sink.aclose()


_ = _Session  # imported to pin the name the task filter relies on


# ---- TLS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.syslog_receivers import make_pki

    folder = tmp_path_factory.mktemp("pki")
    return make_pki(folder)


async def tls_server(pki: Any, script: Script) -> tuple[Hostile, Any]:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    hostile = Hostile(script)
    hostile.server = await asyncio.start_server(hostile._serve, "127.0.0.1", 0, ssl=ctx)
    return hostile, ctx


async def test_tls_wrong_hostname_is_permanent(pki_dir: Any) -> None:
    """A certificate for another name: permanent SinkError, quickly, no task left."""
    hostile, _ = await tls_server(pki_dir, answer_each(ok))
    async with hostile:
        error, took = await attempt(
            hostile, 3, transport="relp_tls", ca_file=str(pki_dir.ca),
            server_name="wrong.example",
        )  # fmt: skip
    assert isinstance(error, SinkError) and not error.retriable, repr(error)
    assert took < 2


async def test_tls_hang_up_mid_batch_is_retriable(pki_dir: Any) -> None:
    """TLS peer closes without close_notify after two answers: retriable, bounded."""
    hostile, _ = await tls_server(pki_dir, answer_each(serverclose_after_two))
    async with hostile:
        error, took = await attempt(
            hostile, 5, transport="relp_tls", ca_file=str(pki_dir.ca)
        )
    assert isinstance(error, SinkUnavailableError), repr(error)
    assert took < 4 * TIMEOUT + 1


async def test_tls_handshake_never_answered(pki_dir: Any) -> None:
    """A plain TCP peer that never answers the ClientHello: bounded by timeout."""
    async with Hostile(silent_open) as hostile:
        error, took = await attempt(
            hostile, 1, transport="relp_tls", ca_file=str(pki_dir.ca)
        )
    assert error is not None
    assert took < 4 * TIMEOUT + 1, f"took {took:.1f}s"


async def test_no_asyncio_write_warnings_after_hang_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver that hangs up mid-batch: no 'socket.send() raised' noise."""

    async def hang_up_after_one(r: Any, w: Any, s: Hostile) -> None:
        await s.opened(r, w)
        await read_frame(r)
        w.transport.abort()  # RST

    async with Hostile(hang_up_after_one) as server:
        sink = make_sink(server.port, relp_window=1024)
        records = [make_event(i, note="n" * 2000) for i in range(1000)]
        with (
            caplog.at_level("WARNING", logger="asyncio"),
            pytest.raises(SinkUnavailableError),
        ):
            await sink.send(records)
        await sink.aclose()
    noise = [r for r in caplog.records if "socket.send() raised" in r.getMessage()]
    assert not noise, f"{len(noise)} asyncio warnings"

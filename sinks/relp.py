"""RELP: syslog with an application-level answer for every message.

The Reliable Event Logging Protocol (librelp, rsyslog's ``imrelp``) frames each
request and answer as ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. A session
opens with ``open`` (our offers: ``relp_version=0``, ``commands=syslog``), sends
each message as ``syslog`` and gets ``rsp`` with ``200 OK`` once the receiver
took it; ``close`` ends it, and the receiver may send ``serverclose`` at any
time. Because frames are length-counted, a line break inside a message cannot
split it.

``RelpTransport.send`` keeps up to ``window`` messages unanswered and returns
only when every message of the batch was answered ``200``. Anything else (a
refusal, ``serverclose``, a lost connection, no answer within ``timeout``, a
malformed reply) raises a retriable ``SinkUnavailableError`` and the caller
sends the batch again; messages the receiver already confirmed are remembered
(by digest, until the next fully confirmed batch) and skipped on that resend,
so a retry duplicates only what was in flight without an answer. A TLS
certificate that does not verify, or a receiver that refuses the session, is a
permanent ``SinkError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from collector.errors import SinkError, SinkUnavailableError
from sinks.syslog_transport import StreamPeer, stream_failure

log = structlog.get_logger(__name__)

Answer = Callable[["Reply | None"], None]

DEFAULT_WINDOW = 128
MAX_TXNR = 999_999_999
# Answers are short ("200 OK", or the offers of an open); anything longer is
# not RELP and must not make us buffer without limit.
MAX_REPLY_BYTES = 64 * 1024
OFFERS = b"relp_version=0\nrelp_software=bbaudit\ncommands=syslog"
_MAX_REMEMBERED = 200_000
_READ_CHUNK = 64 * 1024
_CLOSE_WAIT_S = 2.0
_FIELD = {"txnr": 9, "command": 32, "datalen": 9}
_NUMBER = re.compile(rb"0|[1-9][0-9]*")
_COMMAND = re.compile(rb"[a-z]+")
_CODE = re.compile(rb"([0-9]{3})(?:[ \n]|$)")


class RelpProtocolError(Exception):
    """The receiver sent something that is not a RELP frame we expect."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One RELP frame."""

    txnr: int
    command: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """The status of an ``rsp``: a three-digit code and its text."""

    code: int
    text: str
    offers: bytes = b""


def encode_frame(txnr: int, command: bytes, data: bytes) -> bytes:
    """``TXNR SP COMMAND SP DATALEN [SP DATA] LF``."""
    head = b"%d %s %d" % (txnr, command, len(data))
    return head + b" " + data + b"\n" if data else head + b"\n"


def parse_reply(data: bytes) -> Reply:
    """The status of ``rsp`` data (``200 OK\\n...``); raises ``RelpProtocolError``.

    Empty data (the answer to ``close``) is code 0, which only ``close`` expects.
    """
    if not data:
        return Reply(0, "")
    match = _CODE.match(data)
    if match is None:
        raise RelpProtocolError("rsp without a three-digit status")
    first, _, offers = data[4:].partition(b"\n")
    text = first.decode("utf-8", "replace")[:200]

    return Reply(int(match.group(1)), text, offers)


class FrameParser:
    """Cuts received bytes into frames; never buffers more than one bounded frame.

    ``feed`` returns the frames completed so far and raises ``RelpProtocolError``
    at the first byte that cannot be RELP: a field that is not a number or a
    lowercase command, one longer than its limit, data over ``max_data`` bytes,
    or a frame not ended by LF.
    """

    def __init__(self, max_data: int = MAX_REPLY_BYTES) -> None:
        self._buffer = bytearray()
        self._max_data = max_data

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; the frames they complete, in order."""
        self._buffer += data
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)

        return frames

    def _next(self) -> Frame | None:
        buf = self._buffer
        txnr_end = _field_end(buf, 0, "txnr", b" ")
        if txnr_end is None:
            return None
        command_end = _field_end(buf, txnr_end + 1, "command", b" ")
        if command_end is None:
            return None
        length_end = _field_end(buf, command_end + 1, "datalen", b" \n")
        if length_end is None:
            return None
        txnr = _number(buf[:txnr_end], "txnr")
        command = bytes(buf[txnr_end + 1 : command_end])
        if not _COMMAND.fullmatch(command):
            raise RelpProtocolError("command is not a lowercase word")
        length = _number(buf[command_end + 1 : length_end], "datalen")
        if length > self._max_data:
            raise RelpProtocolError(f"reply of {length} bytes over the limit")
        if length and buf[length_end] != ord(" "):
            raise RelpProtocolError("data length not followed by a space")

        start = length_end + 1 if buf[length_end] == ord(" ") else length_end
        end = start + length
        if len(buf) <= end:
            return None
        if buf[end] != ord("\n"):
            raise RelpProtocolError("frame not ended by LF")
        data = bytes(buf[start:end])
        del buf[: end + 1]

        return Frame(txnr, command, data)


def _field_end(buf: bytearray, start: int, name: str, ends: bytes) -> int | None:
    """Where the field at ``start`` ends; None if more bytes are needed."""
    limit = _FIELD[name]
    for index in range(start, min(len(buf), start + limit + 1)):
        if buf[index] in ends:
            if index == start:
                raise RelpProtocolError(f"empty {name}")
            return index
    if len(buf) > start + limit:
        raise RelpProtocolError(f"{name} longer than {limit} characters")
    return None


def _number(field: bytearray, name: str) -> int:
    if not _NUMBER.fullmatch(field):
        raise RelpProtocolError(f"{name} is not a number")
    return int(field)


class _Session:
    """One open RELP connection: numbers requests and matches their answers.

    A reader task calls each request's ``on_answer`` with its ``Reply``, or
    with None once the session is lost (``lost`` says why); it never raises.
    Callbacks, not futures: a batch has thousands of requests in flight, and
    waiting on that many futures costs more than the protocol itself.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        io_timeout: float,
    ) -> None:
        self.lost: str | None = None
        # The TLS error that ended the session, if one did: a refused client
        # certificate must surface as such, not as a lost session.
        self.tls_error: ssl.SSLError | None = None
        self._closing = False
        self._io_timeout = io_timeout
        self._reader = reader
        self._writer = writer
        self._txnr = 0
        self._pending: dict[int, Answer] = {}
        self._task = asyncio.create_task(self._read_loop())

    def request(self, command: bytes, data: bytes, on_answer: Answer) -> None:
        """Write one request; ``on_answer`` gets its reply (None if lost)."""
        if self.lost is not None:
            on_answer(None)
            return
        self._txnr = self._txnr % MAX_TXNR + 1
        self._pending[self._txnr] = on_answer
        self._writer.write(encode_frame(self._txnr, command, data))

    def ask(self, command: bytes, data: bytes) -> asyncio.Future[Reply | None]:
        """Write one request; the future gets its reply (None if lost)."""
        future: asyncio.Future[Reply | None] = (
            asyncio.get_running_loop().create_future()
        )

        def answered(reply: Reply | None) -> None:
            if not future.done():
                future.set_result(reply)

        self.request(command, data, answered)
        return future

    async def drain(self) -> None:
        """Wait until the socket took what was written (OSError, TimeoutError)."""
        if self.lost is None:
            await asyncio.wait_for(self._writer.drain(), self._io_timeout)

    async def _read_loop(self) -> None:
        parser = FrameParser()
        try:
            while self.lost is None:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    self.lose("connection closed by the receiver")
                for frame in parser.feed(data):
                    self._dispatch(frame)
        except RelpProtocolError as exc:
            self.lose(f"malformed reply: {exc}")
        except (OSError, ssl.SSLError) as exc:
            if isinstance(exc, ssl.SSLError):
                self.tls_error = exc
            self.lose(f"read failed: {exc!r}")

    def _dispatch(self, frame: Frame) -> None:
        if frame.command == b"serverclose":
            self.lose("serverclose from the receiver")
            return
        if frame.command != b"rsp":
            raise RelpProtocolError(f"unexpected command {frame.command.decode()}")
        if frame.txnr not in self._pending:
            raise RelpProtocolError(f"rsp for unknown txnr {frame.txnr}")
        # Parsed before the request leaves ``_pending``: a bad answer must
        # leave it there for ``lose`` to resolve.
        reply = parse_reply(frame.data)
        self._pending.pop(frame.txnr)(reply)

    def lose(self, reason: str, *, ours: bool = False) -> None:
        """Mark the session unusable: every open request is answered None."""
        if self.lost is None:
            self.lost = reason
            # After our ``close`` the receiver's ``serverclose`` is expected.
            if not ours and not self._closing:
                log.warning(
                    "relp.session_lost", reason=reason, unanswered=len(self._pending)
                )
        pending, self._pending = self._pending, {}
        for on_answer in pending.values():
            on_answer(None)
        self._writer.close()

    def abort(self) -> None:
        """Lose the session and stop its reader now, without waiting."""
        self.lose("dropped by us", ours=True)
        self._task.cancel()

    async def aclose(self, *, polite: bool) -> None:
        """Close; if ``polite``, send ``close`` and wait for its answer first."""
        if polite and self.lost is None:
            with contextlib.suppress(OSError, TimeoutError):
                self._closing = True
                answer = self.ask(b"close", b"")
                await self.drain()
                # A polite close is a courtesy: a slow receiver must not hold
                # our shutdown for the whole timeout.
                wait = min(self._io_timeout, _CLOSE_WAIT_S)
                await asyncio.wait_for(asyncio.shield(answer), wait)
        self.lose("closed by us", ours=True)
        self._task.cancel()
        await asyncio.wait({self._task})
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self._writer.wait_closed(), self._io_timeout)


@dataclass(slots=True)
class _Tally:
    """What the answers to one batch said so far."""

    acked: list[int] = field(default_factory=list)
    refused: list[Reply] = field(default_factory=list)
    unanswered: int = 0
    waiting: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def answer_for(self, index: int) -> Answer:
        """The callback that files the answer to message ``index``."""
        self.waiting += 1

        def answered(reply: Reply | None) -> None:
            self.waiting -= 1
            if reply is None:
                self.unanswered += 1
            elif reply.code == 200:
                self.acked.append(index)
            else:
                self.refused.append(reply)
            self.changed.set()

        return answered


class RelpTransport:
    """Syslog over RELP, plain TCP or TLS; reconnects lazily after a failure."""

    def __init__(self, peer: StreamPeer, *, window: int = DEFAULT_WINDOW) -> None:
        self._peer = peer
        self._sink = peer.sink
        self._tls = peer.tls
        self._timeout = peer.timeout
        self._window = window
        self._session: _Session | None = None
        self._confirmed: set[bytes] = set()

    async def send(self, messages: Sequence[bytes]) -> None:
        """Return once the receiver answered ``200`` to every message.

        Raises ``SinkUnavailableError`` (retriable) when any message was not
        confirmed, and a permanent ``SinkError`` for an untrusted certificate or
        a refused session.
        """
        digests = [_digest(m) for m in messages]
        todo = [i for i, d in enumerate(digests) if d not in self._confirmed]
        sent = [digests[i] for i in todo]
        tally = _Tally()
        try:
            session = await self._connected()
            await self._exchange(session, [messages[i] for i in todo], tally)
        except asyncio.CancelledError:
            # Cancelled by the caller's deadline: answers still on their way
            # would land on a session nobody tallies; start afresh next time.
            self._remember(tally, sent)
            self._drop()
            raise
        except (OSError, TimeoutError, EOFError) as exc:
            self._remember(tally, sent)
            await self._abort()
            raise stream_failure(exc, self._sink, "relp") from exc

        self._settle(tally, sent, skipped=len(messages) - len(todo))

    def _remember(self, tally: _Tally, digests: list[bytes]) -> None:
        """Keep the digests of confirmed messages so a resend skips them."""
        if len(self._confirmed) + len(tally.acked) > _MAX_REMEMBERED:
            self._confirmed.clear()
        self._confirmed.update(digests[i] for i in tally.acked)

    def _settle(self, tally: _Tally, digests: list[bytes], *, skipped: int) -> None:
        """Forget or remember what was confirmed; raise unless everything was."""
        if not tally.refused and not tally.unanswered:
            self._confirmed.clear()
            return
        self._remember(tally, digests)
        lost = self._session.lost if self._session is not None else None
        first = tally.refused[0] if tally.refused else None
        raise SinkUnavailableError(
            f"relp: {len(tally.acked) + skipped} confirmed,"
            f" {len(tally.refused)} refused, {tally.unanswered} unanswered"
            + (f"; first refusal: {first.code} {first.text}" if first else "")
            + (f" ({lost})" if lost else ""),
            sink=self._sink,
        )

    async def _exchange(
        self, session: _Session, messages: list[bytes], tally: _Tally
    ) -> None:
        """Send with at most ``window`` unanswered; collect every answer."""
        for index, message in enumerate(messages):
            if tally.waiting >= self._window:
                await session.drain()
                await self._await_answers(tally, self._window - 1)
            if session.lost is not None:
                tally.unanswered += len(messages) - index
                break
            session.request(b"syslog", message, tally.answer_for(index))
        await session.drain()
        await self._await_answers(tally, 0)

    async def _await_answers(self, tally: _Tally, until: int) -> None:
        """Wait until at most ``until`` answers are missing.

        Raises ``TimeoutError`` when ``timeout`` passes without any answer.
        """
        while tally.waiting > until:
            tally.changed.clear()
            try:
                async with asyncio.timeout(self._timeout):
                    await tally.changed.wait()
            except TimeoutError:
                raise TimeoutError(f"no relp answer within {self._timeout} s") from None

    async def _connected(self) -> _Session:
        """The open session, or a new one once the last was lost."""
        if self._session is not None and self._session.lost is None:
            return self._session
        await self._abort()
        reader, writer = await self._peer.open()
        session = _Session(reader, writer, self._timeout)
        self._session = session
        await self._open(session)
        log.debug("relp.connected", sink=self._sink, tls=self._tls is not None)

        return session

    async def _open(self, session: _Session) -> None:
        """Send ``open``; a refusal or a receiver without ``syslog`` is permanent."""
        answer = session.ask(b"open", OFFERS)
        await session.drain()
        reply = await asyncio.wait_for(answer, self._timeout)
        if reply is None:
            lost = EOFError(f"session lost while opening: {session.lost}")
            raise lost from session.tls_error
        refusal = _refusal(reply)
        if refusal is not None:
            await self._abort()
            raise SinkError(refusal, sink=self._sink, retriable=False)

    async def aclose(self) -> None:
        """Close the session politely (``close``, then wait briefly). Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.aclose(polite=True)

    def _drop(self) -> None:
        """Drop the session at once, without waiting (for a cancelled send)."""
        session, self._session = self._session, None
        if session is not None:
            session.abort()

    async def _abort(self) -> None:
        """Drop the session without ``close``: its answers can no longer be trusted."""
        session, self._session = self._session, None
        if session is not None:
            await session.aclose(polite=False)


def _refusal(reply: Reply) -> str | None:
    """Why an ``open`` answer does not let us send syslog, or None."""
    if reply.code != 200:
        return f"relp session refused: {reply.code} {reply.text}"
    for line in reply.offers.split(b"\n"):
        name, _, value = line.partition(b"=")
        if name == b"commands" and b"syslog" not in value.split(b","):
            return "relp receiver does not offer the syslog command"
    return None


def _digest(message: bytes) -> bytes:
    return hashlib.blake2b(message, digest_size=16).digest()

"""Syslog transports: UDP datagrams, and TCP or TLS streams with octet counting.

(RELP, the acknowledged transport, lives in ``sinks.relp``.)

Every frame carries exactly one message: a UDP datagram is one message, and on
a stream each message is framed as ``LEN SP MSG`` (RFC 6587 octet counting,
RFC 5425 for TLS), so a line break inside a message can never split it.

Every await has a timeout. A failure closes the connection and raises a
retriable ``SinkUnavailableError``; the next ``send`` reconnects. A receiver
certificate that does not verify, or a receiver that refuses our client
certificate, raises a permanent ``SinkError`` (a config problem that waiting
will not fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from collector.errors import SinkError, SinkUnavailableError

log = structlog.get_logger(__name__)

# The least time a new TLS connection waits for a refusal of our certificate.
_TLS_VERDICT_MIN_S = 0.5


class Transport(Protocol):
    """Sends already encoded messages, one frame each."""

    async def send(self, messages: Sequence[bytes]) -> None:
        """Send every message or raise ``SinkError``."""
        ...

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        ...


def make_tls_context(
    *,
    verify: bool,
    ca_file: str | None,
    client_cert: str | None,
    client_key: str | None,
) -> ssl.SSLContext:
    """A client context: TLS >= 1.2, verification on unless ``verify`` is false."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert, client_key)

    return context


@dataclass(frozen=True, slots=True)
class StreamPeer:
    """A TCP or TLS receiver, and how the stream transports reach it."""

    sink: str  # the sink's name, for errors and log lines
    host: str
    port: int
    tls: ssl.SSLContext | None
    server_name: str | None
    timeout: float

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection, TLS handshake included, within ``timeout`` seconds.

        The certificate is checked against ``server_name`` when given (a
        receiver reached by address), else against ``host``.
        """
        tls = self.tls
        return await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=tls,
                server_hostname=(self.server_name or self.host) if tls else None,
                ssl_handshake_timeout=self.timeout if tls else None,
            ),
            self.timeout,
        )


def untrusted_certificate(exc: ssl.SSLCertVerificationError, sink: str) -> SinkError:
    """The permanent error for a receiver whose certificate does not verify."""
    return SinkError(
        f"TLS certificate not trusted: {exc.verify_message}",
        sink=sink,
        retriable=False,
    )


# The TLS alerts by which a receiver refuses our client certificate (or our
# lack of one): a configuration problem, not an outage.
_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    }
)


def stream_failure(exc: BaseException, sink: str, transport: str) -> SinkError:
    """The error a failed stream send raises: permanent when the TLS peers do
    not trust each other (their certificate, or ours; also when that is the
    cause of ``exc``), else retriable."""
    for cause in (exc, exc.__cause__):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return untrusted_certificate(cause, sink)
        if (
            isinstance(cause, ssl.SSLError)
            and cause.reason in _CLIENT_CERTIFICATE_ALERTS
        ):
            return SinkError(
                f"TLS receiver refused our client certificate ({cause.reason})",
                sink=sink,
                retriable=False,
            )
    return SinkUnavailableError(f"{transport} send failed: {exc!r}", sink=sink)


def octet_frame(message: bytes) -> bytes:
    """``LEN SP MSG`` (RFC 6587 section 3.4.1)."""
    return str(len(message)).encode("ascii") + b" " + message


class UdpTransport:
    """One datagram per message to a fixed peer."""

    def __init__(self, sink: str, host: str, port: int, timeout: float) -> None:
        self._sink = sink
        self._host = host
        self._port = port
        self._timeout = timeout
        self._sock: socket.socket | None = None

    async def send(self, messages: Sequence[bytes]) -> None:
        """Send each message as one datagram (UDP gives no delivery guarantee)."""
        loop = asyncio.get_running_loop()
        try:
            sock = self._sock or await self._connect()
            for message in messages:
                await asyncio.wait_for(loop.sock_sendall(sock, message), self._timeout)
        except (OSError, TimeoutError) as exc:
            await self.aclose()
            raise SinkUnavailableError(
                f"udp send failed: {exc!r}", sink=self._sink
            ) from exc

    async def _connect(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM),
            self._timeout,
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), self._timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

        return sock

    async def aclose(self) -> None:
        """Close the socket. Idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class StreamTransport:
    """TCP or TLS with octet-counted frames; reconnects lazily after a failure."""

    def __init__(self, peer: StreamPeer) -> None:
        self._peer = peer
        self._sink = peer.sink
        self._tls = peer.tls
        self._timeout = peer.timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, messages: Sequence[bytes]) -> None:
        """Write all frames and drain; any failure closes the connection.

        A batch cut off in the middle is resent whole by the caller, so a
        receiver may see its first messages twice (at-least-once). Returning
        means the local kernel took the bytes, not that the receiver read them:
        one that dies with them unread loses them. ``sinks.relp`` (``transport:
        relp``/``relp_tls``) is the acknowledged alternative.
        """
        payload = b"".join(octet_frame(m) for m in messages)
        try:
            writer = await self._connected()
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (OSError, TimeoutError, EOFError) as exc:
            await self.aclose()
            raise stream_failure(exc, self._sink, "stream") from exc

    async def _connected(self) -> asyncio.StreamWriter:
        """The open writer, reconnecting if the peer closed it meanwhile.

        A syslog receiver never sends data, so the reader only sees the peer's
        EOF: a receiver that restarted is noticed here instead of after the
        next batch was lost.
        """
        if self._writer is not None and self._reader is not None:
            if not self._reader.at_eof() and not self._writer.is_closing():
                return self._writer
            await self.aclose()
        started = time.monotonic()
        reader, writer = await self._peer.open()
        self._reader, self._writer = reader, writer
        if self._tls is not None:
            await self._await_tls_verdict(reader, time.monotonic() - started)
        log.debug("syslog.connected", sink=self._sink, tls=self._tls is not None)

        return writer

    async def _await_tls_verdict(
        self, reader: asyncio.StreamReader, handshake_s: float
    ) -> None:
        """Wait briefly for the receiver to refuse us after the handshake.

        Under TLS 1.3 the receiver checks our client certificate after our
        side of the handshake is done, and its refusal comes as an alert just
        after. Writing at once would hand a batch to a connection that is
        already refused, and it could count as sent. A receiver never sends
        data, so silence means we were accepted. The wait is twice the
        handshake's time (the alert takes about one round trip), at least
        ``_TLS_VERDICT_MIN_S``: once per connection, which lives long.
        """
        wait = min(self._timeout, max(_TLS_VERDICT_MIN_S, 2 * handshake_s))
        try:
            data = await asyncio.wait_for(reader.read(1), wait)
        except TimeoutError:
            return
        what = "sent data" if data else "closed the connection"
        raise ConnectionResetError(f"the receiver {what} right after the handshake")

    async def aclose(self) -> None:
        """Close the connection (TLS sends close_notify). Idempotent."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        # A broken connection has nothing left to flush; closing is best effort.
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), self._timeout)

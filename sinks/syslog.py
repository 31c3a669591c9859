"""The syslog sink: RFC 5424 messages over UDP, TCP, TLS (RFC 5425/6587) or RELP.

Transports (``transport``): ``udp``; ``tcp`` and ``tls`` with octet counting,
where a batch counts as sent once the local kernel took it; ``relp`` and
``relp_tls`` (rsyslog's RELP, ``sinks.relp``), where the receiver answers every
message and a batch counts as sent only once each message was confirmed, so a
receiver that stops mid-stream loses nothing (what it did not confirm is sent
again). The TLS options (``ca_file``, ``verify``, ``client_cert``,
``client_key``, ``server_name``) apply to ``tls`` and ``relp_tls``.

Each record becomes one message: ``MSGID`` is ``event`` or ``alert``; the
structured data ``[bbaudit@32473 id=".." kind=".." action=".."]`` carries the
record id so a receiver can dedupe; MSG is the rendered record as JSON, or a
CEF line (``format: cef`` for every record, ``alerts_as_cef`` for alerts only).

Severity: an alert's severity maps to syslog severity (critical -> crit, high
-> err, medium -> warning, low -> notice, info -> info); an audit event is
``info``, or ``notice`` when its outcome is a failure.

Size: a UDP message is cut to ``max_udp_bytes`` (default 2048) and a stream
message to ``max_stream_bytes`` (default 8000 bytes), on a UTF-8 boundary, and
marked ``truncated="true"`` in its structured data; each truncation is logged
at WARNING with the record id and counted. The default fits a stock rsyslog
(``maxMessageSize`` 8k): a receiver that cuts longer messages itself does so
without telling us (RELP still answers 200, TCP splits the rest into bogus
messages). Raise it together with the receiver's limit.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import orjson
import structlog
from pydantic import Field, field_validator, model_validator

from collector.errors import SinkClosedError, SinkError
from collector.model import Alert, AuditEvent, Record
from collector.plugins import SINKS, Runtime
from collector.settings_types import ByteSize, Duration
from sinks import cef, rfc5424
from sinks.base import SinkSettings
from sinks.relp import DEFAULT_WINDOW, RelpTransport
from sinks.render import render
from sinks.syslog_transport import (
    StreamPeer,
    StreamTransport,
    Transport,
    UdpTransport,
    make_tls_context,
)

log = structlog.get_logger(__name__)

ALERT_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
EVENT_SEVERITY = {"failure": 5}
DEFAULT_EVENT_SEVERITY = 6
DEFAULT_RELP_PORT = 2514
TransportName = Literal["udp", "tcp", "tls", "relp", "relp_tls"]
RELP_TRANSPORTS = ("relp", "relp_tls")
_LINE_SEPARATORS = (("\u2028", "\\u2028"), ("\u2029", "\\u2029"), ("\x85", "\\u0085"))


class SyslogSinkSettings(SinkSettings):
    """Where and how to send syslog messages; TLS verifies by default.

    ``transport`` is ``udp``, ``tcp``, ``tls`` (the default), ``relp`` (RELP
    over plain TCP) or ``relp_tls`` (RELP over TLS). Only the RELP transports
    get an answer per message; use them when a receiver restart must not lose
    a batch. ``port`` defaults to 6514, or 2514 for ``relp``/``relp_tls``.
    ``relp_window`` is how many RELP messages may await their answer at once.
    ``ca_file``, ``verify``, ``client_cert``, ``client_key`` and
    ``server_name`` configure both ``tls`` and ``relp_tls``.
    """

    cef_capable: ClassVar[bool] = True

    host: str
    port: int = Field(
        default=6514,
        ge=1,
        le=65535,
        description="6514, or 2514 for relp/relp_tls when not set",
    )
    transport: TransportName = Field(
        default="tls",
        description="udp, tcp, tls, relp (acknowledged) or relp_tls (acknowledged)",
    )
    facility: str = "local0"
    app_name: str = "bbaudit"
    hostname: str | None = None
    sd_id: str = rfc5424.DEFAULT_SD_ID
    utf8_bom: bool = False
    alerts_as_cef: bool = True
    ca_file: str | None = None
    verify: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None
    max_udp_bytes: ByteSize = Field(default=2048, ge=1024)
    # Stock rsyslog keeps 8096 bytes of a message; see the module docstring.
    max_stream_bytes: ByteSize = Field(
        default=8000,
        ge=1024,
        description=(
            "TCP/TLS/RELP messages are cut here and marked truncated; raise it"
            " only with the receiver's limit (rsyslog maxMessageSize)"
        ),
    )
    timeout: Duration = 10.0
    relp_window: int = Field(
        default=DEFAULT_WINDOW,
        ge=1,
        le=1024,
        description="RELP messages sent before their answers arrive",
    )

    @model_validator(mode="before")
    @classmethod
    def _relp_port(cls, data: Any) -> Any:
        """RELP receivers conventionally listen on 2514, not syslog-TLS's 6514."""
        relp = isinstance(data, dict) and data.get("transport") in RELP_TRANSPORTS
        if relp and "port" not in data:
            data = {**data, "port": DEFAULT_RELP_PORT}
        return data

    @field_validator("facility")
    @classmethod
    def _known_facility(cls, value: str) -> str:
        if value not in rfc5424.FACILITIES:
            known = ", ".join(rfc5424.FACILITIES)
            raise ValueError(f"unknown facility {value!r} (known: {known})")
        return value


class SyslogSink:
    """Formats records as RFC 5424 messages and hands them to a transport."""

    def __init__(
        self, settings: SyslogSinkSettings, runtime: Runtime | None = None
    ) -> None:
        self.name = settings.name or "syslog"
        self.healthy = True
        self.health_detail = "ok"
        self._settings = settings
        self._header = rfc5424.Header(
            facility=rfc5424.FACILITIES[settings.facility],
            hostname=settings.hostname or socket.gethostname(),
            app_name=settings.app_name,
        )
        self._limit = (
            settings.max_udp_bytes
            if settings.transport == "udp"
            else settings.max_stream_bytes
        )
        self._transport = _make_transport(self.name, settings)
        self._closed = False
        self._truncated = None
        if runtime is not None:
            self._truncated = runtime.metrics.counter(
                "bbaudit_sink_messages_truncated_total",
                "Messages cut to fit a size limit and marked truncated.",
                ["sink"],
            )

    async def start(self) -> None:
        """Nothing to do: the transport connects on first use."""

    async def send(self, records: Sequence[Record]) -> None:
        """Send one message per record; return once all were written."""
        if self._closed:
            raise SinkClosedError(self.name)
        messages = [self.encode(r) for r in records]
        try:
            await self._transport.send(messages)
        except SinkError as exc:
            self._note_failure(exc)
            raise
        self.healthy, self.health_detail = True, "ok"

    def encode(self, record: Record) -> bytes:
        """The RFC 5424 message of one record (cut and marked if too long)."""
        is_alert = isinstance(record, Alert)
        message, truncated = rfc5424.encode(
            self._header,
            severity=_severity(record),
            moment=record.time,
            msgid="alert" if is_alert else "event",
            sd_id=self._settings.sd_id,
            params=_params(record),
            msg=self._msg(record),
            bom=self._settings.utf8_bom,
            max_bytes=self._limit,
        )
        if truncated:
            log.warning(
                "syslog.message_truncated",
                sink=self.name,
                record_id=record.id,
                limit=self._limit,
            )
            if self._truncated is not None:
                self._truncated.labels(self.name).inc()

        return message

    def _msg(self, record: Record) -> str:
        as_cef = self._settings.format == "cef" or (
            self._settings.alerts_as_cef and isinstance(record, Alert)
        )
        if as_cef:
            return cef.format_record(record)
        fmt = "ecs" if self._settings.format == "cef" else self._settings.format
        document: dict[str, Any] = render(
            record, fmt, original=self._settings.include_original
        )

        text = orjson.dumps(document, default=str).decode("utf-8")
        # JSON allows these raw, but some readers (Python's splitlines, JS) take
        # them for line breaks; escaped they mean the same and split nothing.
        for raw, escaped in _LINE_SEPARATORS:
            text = text.replace(raw, escaped)
        return text

    def _note_failure(self, exc: SinkError) -> None:
        if not exc.retriable:
            self.healthy, self.health_detail = False, str(exc)[:300]
            log.error("syslog.send_failed", sink=self.name, reason=str(exc)[:300])

    async def aclose(self) -> None:
        """Close the transport. Idempotent."""
        self._closed = True
        await self._transport.aclose()


def _severity(record: Record) -> int:
    if isinstance(record, Alert):
        return ALERT_SEVERITY.get(record.severity, 4)
    return EVENT_SEVERITY.get(record.outcome, DEFAULT_EVENT_SEVERITY)


def _params(record: Record) -> list[tuple[str, str | None]]:
    if isinstance(record, Alert):
        return [
            ("id", record.id),
            ("kind", "alert"),
            ("rule", record.rule_id),
            ("severity", record.severity),
        ]
    assert isinstance(record, AuditEvent)
    return [
        ("id", record.id),
        ("kind", "event"),
        ("action", record.action),
        ("outcome", record.outcome),
    ]


def _make_transport(name: str, settings: SyslogSinkSettings) -> Transport:
    if settings.transport == "udp":
        return UdpTransport(name, settings.host, settings.port, settings.timeout)
    tls = None
    if settings.transport in ("tls", "relp_tls"):
        if not settings.verify:
            log.warning("syslog.tls_verification_disabled", sink=name)
        tls = make_tls_context(
            verify=settings.verify,
            ca_file=settings.ca_file,
            client_cert=settings.client_cert,
            client_key=settings.client_key,
        )
    peer = StreamPeer(
        name, settings.host, settings.port, tls, settings.server_name, settings.timeout
    )
    if settings.transport in RELP_TRANSPORTS:
        return RelpTransport(peer, window=settings.relp_window)
    return StreamTransport(peer)


def _factory(settings: SyslogSinkSettings, runtime: Runtime) -> SyslogSink:
    return SyslogSink(settings, runtime)


SINKS.register(
    "syslog",
    SyslogSinkSettings,
    _factory,
    "RFC 5424 syslog over UDP, TCP/TLS (octet counting) or acknowledged RELP;"
    " JSON or CEF messages",
)

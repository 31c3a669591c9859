"""The Splunk HTTP Event Collector sink (``/services/collector/event``).

One request carries envelopes stacked back to back (not a JSON array), each with
its own ``time`` (seconds as a fixed 6-decimal number, never an exponent),
``host``, ``source``, ``sourcetype``, optional ``index``, string-only ``fields``
and the rendered record as ``event``. Requests stay under ``max_batch_bytes``
(before gzip).

What each answer does (HEC codes in parentheses):

- 200 (0): delivered; with ``use_ack`` the ``ackId`` is polled on
  ``/services/collector/ack`` until true or ``ack_timeout`` (then retriable: the
  whole batch is sent again, the receiver may see some records twice);
- 400 with ``invalid-event-number`` k (6, 12, 13, 15): envelopes before k were
  indexed, k is dropped (logged at ERROR with its position and record id,
  counted in ``bbaudit_sink_records_dropped_total``) and k+1.. are sent again.
  Resending k would fail the same way forever; dropping the batch would lose
  the rest. Without a number the part is halved until the bad one is alone;
- 413: the part is halved and each half sent; a lone envelope that is still
  too large is dropped like an invalid one;
- 401, 403, 400 (7 wrong index, 16): configuration errors. A permanent
  ``SinkError``; ``healthy`` turns false with the reason in ``health_detail``;
- 400 (10, 11) channel missing/invalid: a new channel, then retriable;
- 400 (14) ack disabled on the token: ack mode is switched off, resent at once;
- 400 (9), 404, 408, 429, 5xx, timeouts and transport errors: retriable
  ``HecRetryError`` carrying ``retry_after`` when the server sent one.

A TLS certificate that does not verify is a permanent error. The token is only
ever put in the ``Authorization`` header, never in a log event or an error.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog
from pydantic import Field, model_validator

from collector.errors import SinkClosedError, SinkError, SinkUnavailableError
from collector.model import Alert, Record
from collector.plugins import SINKS, Runtime
from collector.settings_types import ByteSize, Duration, parse_duration
from sinks.base import SinkSettings
from sinks.render import render
from sinks.syslog_transport import make_tls_context

log = structlog.get_logger(__name__)

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
PER_EVENT_CODES = frozenset({6, 12, 13, 15})
CONFIG_CODES = frozenset({7, 16})
RETRY_STATUSES = frozenset({404, 408, 429})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SplunkHecSettings(SinkSettings):
    """A HEC endpoint (``url`` is the base, e.g. ``https://splunk:8088``)."""

    url: str
    token: str = Field(repr=False)
    index: str | None = None
    sourcetype: str = "bitbucket:audit:json"
    alert_sourcetype: str = "bbaudit:alert:json"
    source: str = "bbaudit"
    host: str | None = None
    gzip: bool = True
    use_ack: bool = False
    ack_timeout: Duration = 300.0
    ack_poll_interval: Duration = 5.0
    channel: uuid.UUID | None = None
    ca_file: str | None = None
    verify: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    max_batch_bytes: ByteSize = Field(default=900_000, ge=1024)
    timeout: Duration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _room_for_acks(cls, data: Any) -> Any:
        """With acks, ``send`` lasts up to ``ack_timeout``: unless set, the
        delivery layer's ``send_timeout`` grows to cover it, else it would cancel
        every slow ack wait and resend forever (kafka-connect-splunk#122)."""
        if (
            isinstance(data, dict)
            and data.get("use_ack")
            and "send_timeout" not in data
        ):
            ack = parse_duration(data.get("ack_timeout", 300.0))
            request = parse_duration(data.get("timeout", 30.0))
            data = {**data, "send_timeout": ack + 4 * request}
        return data

    @model_validator(mode="after")
    def _send_timeout_covers_acks(self) -> SplunkHecSettings:
        if self.use_ack and self.send_timeout <= self.ack_timeout + self.timeout:
            raise ValueError(
                "send_timeout must be longer than ack_timeout + timeout with use_ack"
            )
        return self


class HecRetryError(SinkUnavailableError):
    """HEC asked us to come back later; ``retry_after`` is its hint in seconds."""

    def __init__(self, message: str, *, sink: str, retry_after: float | None) -> None:
        super().__init__(message, sink=sink)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Envelope:
    record_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one POST of a part of the batch came to."""

    ack_id: int | None = None
    invalid: int | None = None
    halve: bool = False


class SplunkHecSink:
    """Posts stacked envelopes to HEC; see the module docstring for the rules."""

    def __init__(
        self,
        settings: SplunkHecSettings,
        runtime: Runtime | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = settings.name or "splunk_hec"
        self.healthy = True
        self.health_detail = "ok"
        self._settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._channel = str(settings.channel or uuid.uuid4())
        self._use_ack = settings.use_ack
        self._host = settings.host or socket.gethostname()
        self._closed = False
        self.dropped = 0
        self._dropped_metric = (
            None if runtime is None else runtime.metrics.records_dropped
        )

    async def start(self) -> None:
        """Build the HTTP client (connections open on first use)."""
        if self._client is not None:
            return
        settings = self._settings
        if not settings.verify:
            log.warning("hec.tls_verification_disabled", sink=self.name)
        context = make_tls_context(
            verify=settings.verify,
            ca_file=settings.ca_file,
            client_cert=settings.client_cert,
            client_key=settings.client_key,
        )
        self._client = httpx.AsyncClient(
            base_url=settings.url,
            verify=context,
            timeout=httpx.Timeout(settings.timeout),
            transport=self._transport,
            headers={"Authorization": f"Splunk {settings.token}"},
            # No proxy or netrc from the environment: the token must only go
            # to the configured URL.
            trust_env=False,
        )

    async def send(self, records: Sequence[Record]) -> None:
        """Deliver ``records`` (minus any HEC rejects for good) or raise."""
        if self._closed:
            raise SinkClosedError(self.name)
        await self.start()
        envelopes = [_Envelope(r.id, self.envelope(r)) for r in records]
        ack_ids: list[int] = []
        for part in _parts(envelopes, self._settings.max_batch_bytes):
            await self._post_part(part, ack_ids)
        if ack_ids:
            await self._await_acks(ack_ids)

        self.healthy, self.health_detail = True, "ok"

    def envelope(self, record: Record) -> bytes:
        """One HEC envelope as JSON bytes, ``time`` first as a fixed decimal."""
        settings = self._settings
        is_alert = isinstance(record, Alert)
        meta: dict[str, Any] = {
            "host": self._host,
            "source": settings.source,
            "sourcetype": settings.alert_sourcetype
            if is_alert
            else settings.sourcetype,
        }
        if settings.index:
            meta["index"] = settings.index
        meta["fields"] = _indexed_fields(record)
        meta["event"] = render(
            record, settings.format, original=settings.include_original
        )
        rest = orjson.dumps(meta, default=str)

        return b'{"time":' + epoch_decimal(record.time).encode() + b"," + rest[1:]

    async def _post_part(self, part: list[_Envelope], ack_ids: list[int]) -> None:
        """Post one part, resending what HEC did not take (see module docstring)."""
        work = [part]
        while work:
            current = work.pop(0)
            answer = await self._post(current)
            if answer.ack_id is not None:
                ack_ids.append(answer.ack_id)
            elif answer.invalid is not None:
                self._drop(current[answer.invalid], answer.invalid, "invalid")
                rest = current[answer.invalid + 1 :]
                work[:0] = [rest] if rest else []
            elif answer.halve and len(current) == 1:
                self._drop(current[0], 0, "too_large")
            elif answer.halve:
                mid = len(current) // 2
                work[:0] = [current[:mid], current[mid:]]

    async def _post(self, part: list[_Envelope]) -> _Answer:
        """One POST; raises for answers that concern the whole request."""
        body = b"\n".join(e.data for e in part)
        headers = {"X-Splunk-Request-Channel": self._channel}
        if self._settings.gzip:
            body = await _gzip(body)
            headers["Content-Encoding"] = "gzip"
        response = await self._request(EVENT_PATH, body, headers)
        reply = _json(response)
        code = reply.get("code")

        if response.status_code == 200:
            ack = reply.get("ackId")
            return _Answer(ack_id=ack if self._use_ack and isinstance(ack, int) else -1)
        if response.status_code == 413:
            return _Answer(halve=True)
        if response.status_code == 400 and code in PER_EVENT_CODES:
            return self._invalid(reply, len(part))
        if response.status_code == 400 and code == 14:
            log.warning("hec.ack_disabled_by_server", sink=self.name)
            self._use_ack = False
            return await self._post(part)
        raise self._error(response, reply)

    def _invalid(self, reply: dict[str, Any], count: int) -> _Answer:
        number = reply.get("invalid-event-number")
        if isinstance(number, int) and 0 <= number < count:
            return _Answer(invalid=number)
        # No usable position: narrow it down by halving (may resend a few
        # envelopes that were already indexed, which the record id dedupes).
        return _Answer(invalid=0) if count == 1 else _Answer(halve=True)

    async def _await_acks(self, ack_ids: list[int]) -> None:
        """Poll until every ``ackId`` is true; retriable error at the deadline."""
        waiting = {a for a in ack_ids if a >= 0}
        deadline = time.monotonic() + self._settings.ack_timeout
        while waiting and self._use_ack:
            await self._poll_acks(waiting)
            remaining = deadline - time.monotonic()
            if not waiting:
                return
            if remaining <= 0:
                log.warning("hec.ack_timed_out", sink=self.name, pending=len(waiting))
                raise SinkUnavailableError(
                    f"{len(waiting)} requests not acknowledged within "
                    f"{self._settings.ack_timeout}s",
                    sink=self.name,
                )
            await asyncio.sleep(min(self._settings.ack_poll_interval, remaining))

    async def _poll_acks(self, waiting: set[int]) -> None:
        """One ack query; ids answered true leave ``waiting`` (HEC forgets them)."""
        body = orjson.dumps({"acks": sorted(waiting)})
        headers = {"X-Splunk-Request-Channel": self._channel}
        try:
            response = await self._request(ACK_PATH, body, headers)
        except SinkUnavailableError as exc:
            log.warning("hec.ack_poll_failed", sink=self.name, reason=str(exc)[:200])
            return
        reply = _json(response)
        if response.status_code == 200:
            acks = reply.get("acks")
            if isinstance(acks, dict):
                waiting.difference_update(int(k) for k, v in acks.items() if v is True)
            return
        if response.status_code == 400 and reply.get("code") == 14:
            log.warning("hec.ack_disabled_by_server", sink=self.name)
            self._use_ack = False
            return
        error = self._error(response, reply)
        if not error.retriable:
            raise error
        log.warning("hec.ack_poll_failed", sink=self.name, status=response.status_code)

    async def _request(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST with the client's timeouts; transport failures become SinkErrors."""
        assert self._client is not None
        try:
            return await self._client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            if _is_cert_error(exc):
                self._unhealthy(f"TLS certificate not trusted: {exc}")
                raise SinkError(
                    "TLS certificate not trusted", sink=self.name, retriable=False
                ) from exc
            raise HecRetryError(
                f"request failed: {type(exc).__name__}: {exc}",
                sink=self.name,
                retry_after=None,
            ) from exc

    def _error(self, response: httpx.Response, reply: dict[str, Any]) -> SinkError:
        """The error for an answer that concerns the whole request."""
        status, code = response.status_code, reply.get("code")
        text = f"HTTP {status} code {code}: {str(reply.get('text', ''))[:200]}"
        if status == 400 and code in (10, 11):
            self._channel = str(uuid.uuid4())
            return HecRetryError(text, sink=self.name, retry_after=None)
        if status in RETRY_STATUSES or status >= 500 or code == 9:
            return HecRetryError(
                text, sink=self.name, retry_after=_retry_after(response)
            )
        if status in (401, 403) or code in CONFIG_CODES:
            self._unhealthy(text)
        else:
            log.error("hec.request_rejected", sink=self.name, status=status, code=code)
        return SinkError(text, sink=self.name, retriable=False)

    def _unhealthy(self, detail: str) -> None:
        self.healthy, self.health_detail = False, detail
        log.error("hec.sink_stopped", sink=self.name, reason=detail)

    def _drop(self, envelope: _Envelope, position: int, reason: str) -> None:
        self.dropped += 1
        log.error(
            "hec.record_dropped",
            sink=self.name,
            record_id=envelope.record_id,
            position=position,
            reason=reason,
            size=len(envelope.data),
        )
        if self._dropped_metric is not None:
            self._dropped_metric.labels(self.name, reason).inc()

    async def aclose(self) -> None:
        """Close the HTTP client. Idempotent."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


async def _gzip(body: bytes) -> bytes:
    """``body`` gzipped (level 1: HEC bodies are repetitive JSON); a big one
    on a worker thread, where zlib lets go of the GIL, so it compresses on
    another core while the pipeline goes on (about 2 us per KB of envelopes)."""
    if len(body) < _THREAD_GZIP_BYTES:
        return gzip.compress(body, compresslevel=1, mtime=0)
    return await asyncio.to_thread(gzip.compress, body, 1, mtime=0)


# Below this a thread hand-off costs more than compressing in place.
_THREAD_GZIP_BYTES = 64 * 1024


def epoch_decimal(moment: datetime) -> str:
    """Seconds since the epoch with exactly 6 decimals, e.g. ``1638034466.108000``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, fraction = divmod(micros, 1_000_000)

    return f"{seconds}.{fraction:06d}"


def _indexed_fields(record: Record) -> dict[str, str]:
    """Indexed fields: flat, string values only (HEC rejects anything else)."""
    if isinstance(record, Alert):
        fields = {
            "bbaudit_kind": "alert",
            "rule_id": record.rule_id,
            "severity": record.severity,
            "bbaudit_id": record.id,
        }
    else:
        fields = {
            "bbaudit_kind": "event",
            "action": record.action,
            "outcome": record.outcome,
            "bbaudit_id": record.id,
        }
    return {k: str(v) for k, v in fields.items() if v is not None}


def _parts(envelopes: list[_Envelope], limit: int) -> list[list[_Envelope]]:
    """Consecutive parts of at most ``limit`` bytes (an oversized one alone)."""
    parts: list[list[_Envelope]] = []
    current: list[_Envelope] = []
    size = 0
    for envelope in envelopes:
        grown = size + len(envelope.data) + 1
        if current and grown > limit:
            parts.append(current)
            current, grown = [], len(envelope.data) + 1
        current.append(envelope)
        size = grown
    if current:
        parts.append(current)

    return parts


def _json(response: httpx.Response) -> dict[str, Any]:
    """The reply as a dict; HTML or garbage (a proxy's error page) gives ``{}``."""
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return reply if isinstance(reply, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return min(float(value), 300.0)
    except ValueError:
        return None


def _is_cert_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _factory(settings: SplunkHecSettings, runtime: Runtime) -> SplunkHecSink:
    return SplunkHecSink(settings, runtime)


SINKS.register(
    "splunk_hec",
    SplunkHecSettings,
    _factory,
    "Splunk HTTP Event Collector: stacked gzip batches, partial-batch resend, acks",
)

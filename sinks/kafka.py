"""The Kafka sink: rendered records to an events topic and an alerts topic.

Records are keyed by actor, so one user's audit events (and alerts) land on
one partition and stay in order; the record id travels in the ``bbaudit-id``
header so consumers can drop repeats (delivery is at-least-once). The producer
uses ``acks=all``. A record above ``max_request_size`` can never be delivered:
it is dropped, logged with its id (``kafka.record_dropped``) and counted in
``bbaudit_sink_records_dropped_total``, so it cannot hold the rest back.

aiokafka can hang (an idempotent producer with the broker down never returns
from ``send``/``stop``; after an outage an idempotent producer can wedge on
``OutOfOrderSequenceNumber``), so every await here has a deadline, and after a
timeout or a fatal error the producer is thrown away and a new one is built
on the next send. aiokafka errors leave this module as ``SinkError``s.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import Field, field_validator, model_validator

from collector.errors import SinkClosedError, SinkError, SinkUnavailableError
from collector.memo import Memo
from collector.model import Alert, Record
from collector.plugins import SINKS, Runtime
from collector.settings_types import ByteSize, Duration, parse_duration
from sinks.base import SinkSettings
from sinks.render import render

log = structlog.get_logger(__name__)

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# Errors after which the producer's state cannot be trusted: build a new one.
_FATAL_ERRORS = {
    "OutOfOrderSequenceNumber",
    "ProducerFenced",
    "UnknownError",
    "IllegalStateError",
    "ProducerClosed",
}
_NO_KEY = b"-"
# Above key and value: batch header, record varints and the id header. Only
# messages within this of max_request_size get the exact (slower) size check.
_RECORD_OVERHEAD_BYTES = 512


class KafkaSinkSettings(SinkSettings):
    """Where and how to produce. Secrets: ``sasl_password`` (or
    ``sasl_password_file``) and ``ssl_key_password``."""

    bootstrap_servers: list[str] = Field(min_length=1)
    events_topic: str = "bbaudit.events"
    alerts_topic: str = "bbaudit.alerts"
    client_id: str = "bbaudit"
    compression: Compression = "zstd"
    linger_ms: int = Field(default=10, ge=0, le=60_000)
    max_batch_size: ByteSize = 256 * 1024
    max_request_size: ByteSize = 1024 * 1024
    request_timeout: Duration = 30.0
    close_timeout: Duration = 10.0
    enable_idempotence: bool = True
    tls: bool = False
    tls_verify: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    ssl_key_password: str | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _room_for_own_deadlines(cls, data: Any) -> Any:
        """Unless set, the delivery layer's ``send_timeout`` covers a connect,
        a send and a producer reset (``2 * request_timeout + close_timeout``).
        Otherwise it could cancel ``send`` first, every time, and a wedged
        producer would never be thrown away."""
        if isinstance(data, dict) and "send_timeout" not in data:
            request = parse_duration(data.get("request_timeout", 30.0))
            close = parse_duration(data.get("close_timeout", 10.0))
            data = {**data, "send_timeout": 2 * request + close + 5.0}
        return data

    @model_validator(mode="after")
    def _send_timeout_covers_own_deadlines(self) -> KafkaSinkSettings:
        if self.send_timeout <= self.request_timeout + self.close_timeout:
            raise ValueError(
                "send_timeout must be longer than request_timeout + close_timeout"
            )
        return self

    @field_validator("compression")
    @classmethod
    def _codec_installed(cls, value: str) -> str:
        if value in ("snappy", "lz4", "zstd") and not _has_cramjam():
            raise ValueError(f"{value} needs the cramjam package; use gzip or none")
        return value


class KafkaSink:
    """Produces each batch and waits until the broker acknowledged all of it."""

    def __init__(
        self, settings: KafkaSinkSettings, runtime: Runtime | None = None
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        self._key_hashes: Memo[bytes, int] = Memo()
        self.dropped = 0
        self._dropped_metric = (
            None if runtime is None else runtime.metrics.records_dropped
        )

    async def start(self) -> None:
        """Build and start the producer (bootstraps against the brokers)."""
        if self._closed:
            raise SinkClosedError(self.name)
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**producer_options(self._settings))
        try:
            async with asyncio.timeout(self._settings.request_timeout):
                await producer.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._discard(producer)
            raise _translate(exc, self.name, "connect") from exc
        self._producer = producer
        log.info(
            "kafka.connected",
            sink=self.name,
            brokers=self._settings.bootstrap_servers,
        )

    async def send(self, records: Sequence[Record]) -> None:
        """Produce every record; return once all are acknowledged, else raise."""
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._settings.request_timeout):
                await self._produce(producer, records, futures)
                # wait, not gather: a timeout must not cancel the shields that
                # send_batch returned, or the batch futures behind them would
                # fail later with nobody reading their error.
                if futures:
                    await asyncio.wait(futures)
            _raise_first(futures)
        except BaseException as exc:
            for future in futures:
                future.add_done_callback(_retrieve)
            if not isinstance(exc, (KafkaError, TimeoutError, OSError)):
                raise
            error = _translate(exc, self.name, "send")
            if _needs_new_producer(exc):
                await self._reset(type(exc).__name__)
            raise error from exc

    async def _produce(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[Record],
        futures: list[asyncio.Future[Any]],
    ) -> None:
        """Fill one record batch per topic partition, in record order, and hand
        each to the producer as it fills (the rest at the end); ``futures``
        gets one future per batch.

        Whole batches instead of ``producer.send`` per record: aiokafka's
        per-message path (a future and an accumulator lookup each) cost about
        half of this sink's time.
        """
        open_batches: dict[tuple[str, int], Any] = {}
        partitions = _Partitions(producer, self._key_hashes)
        limit = self._settings.max_request_size
        for record in records:
            topic, key, value = self._message(record)
            headers = [("bbaudit-id", record.id.encode())]
            near_limit = len(key) + len(value) + _RECORD_OVERHEAD_BYTES > limit
            if near_limit and self._too_large(record, key, value, headers):
                continue
            partition = partitions.of(topic, key)
            if partition is None:
                partition = await partitions.load(topic, key)
            slot = (topic, partition)
            batch = open_batches.get(slot)
            if batch is not None:
                added = batch.append(
                    timestamp=None, key=key, value=value, headers=headers
                )
                if added is not None:
                    continue
                # Full: hand it over and start the next.
                futures.append(
                    await producer.send_batch(batch, topic, partition=partition)
                )
            # A fresh batch takes any first record, however big (aiokafka's rule).
            batch = open_batches[slot] = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value, headers=headers)
        for (topic, partition), batch in open_batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))

    def _too_large(
        self, record: Record, key: bytes, value: bytes, headers: list[Any]
    ) -> bool:
        """Drop (log, count) a record the broker would refuse; True if dropped.

        Such a record can never be delivered: failing its batch would hold
        every later record behind it in the spool for good. It is logged with
        its id, as the delivery layer does with a record it cannot render.
        """
        limit = self._settings.max_request_size
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size <= limit:
            return False
        self.dropped += 1
        log.error(
            "kafka.record_dropped",
            sink=self.name,
            record_id=record.id,
            reason="too_large",
            size=size,
            max_request_size=limit,
        )
        if self._dropped_metric is not None:
            self._dropped_metric.labels(self.name, "too_large").inc()
        return True

    def _message(self, record: Record) -> tuple[str, bytes, bytes]:
        """The topic, key and value of one record."""
        settings = self._settings
        document = render(record, settings.format, original=settings.include_original)
        key: str | None
        if isinstance(record, Alert):
            topic, key = settings.alerts_topic, record.actor or record.key
        else:
            topic, key = settings.events_topic, record.actor.name or record.actor.id
        return topic, key.encode() if key else _NO_KEY, orjson.dumps(document)

    async def _reset(self, reason: str) -> None:
        """Throw the producer away; the next send builds a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            log.warning("kafka.producer_reset", sink=self.name, reason=reason)
            await self._discard(producer)

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        """Stop a producer without ever waiting longer than ``close_timeout``."""
        try:
            async with asyncio.timeout(self._settings.close_timeout):
                await producer.stop()
        except (KafkaError, TimeoutError, OSError) as exc:
            # A stop that hangs (aiokafka#1101) is abandoned; its records were
            # never acknowledged, so they are retried or spooled by the channel.
            log.warning("kafka.stop_abandoned", sink=self.name, error=repr(exc)[:200])

    async def aclose(self) -> None:
        """Flush and stop the producer. Idempotent."""
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._discard(producer)


def _has_cramjam() -> bool:
    try:
        import cramjam  # noqa: F401
    except ImportError:
        return False
    return True


def producer_options(settings: KafkaSinkSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer`` built from the settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "compression_type": None
        if settings.compression == "none"
        else settings.compression,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "max_request_size": settings.max_request_size,
        "request_timeout_ms": int(settings.request_timeout * 1000),
        "retry_backoff_ms": 200,
    }
    protocol = "SSL" if settings.tls else "PLAINTEXT"
    if settings.sasl_mechanism is not None:
        protocol = "SASL_SSL" if settings.tls else "SASL_PLAINTEXT"
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    options["security_protocol"] = protocol
    if settings.tls:
        options["ssl_context"] = tls_context(settings)
    return options


def tls_context(settings: KafkaSinkSettings) -> ssl.SSLContext:
    """A client TLS context: verification on unless ``tls_verify`` is false."""
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file is not None:
        context.load_cert_chain(
            str(settings.cert_file),
            str(settings.key_file) if settings.key_file else None,
            settings.ssl_key_password,
        )
    return context


class _Partitions:
    """The partition of each key, as aiokafka's default partitioner (and the
    Java client's) picks it: murmur2 of the key over the sorted partitions.
    One per send: a topic's partitions are read once, on its first record."""

    def __init__(self, producer: AIOKafkaProducer, key_hashes: Memo[bytes, int]):
        self._producer = producer
        self._key_hashes = key_hashes
        self._by_topic: dict[str, list[int]] = {}

    async def load(self, topic: str, key: bytes) -> int:
        """Read ``topic``'s partitions (waits for its metadata); the one of ``key``."""
        found: set[int] = await self._producer.partitions_for(topic)
        self._by_topic[topic] = partitions = sorted(found)
        return partitions[self._hash(key) % len(partitions)]

    def of(self, topic: str, key: bytes) -> int | None:
        """The partition ``key`` goes to, or None until ``topic`` is loaded."""
        partitions = self._by_topic.get(topic)
        if partitions is None:
            return None
        return partitions[self._hash(key) % len(partitions)]

    def _hash(self, key: bytes) -> int:
        hashed = self._key_hashes.get(key)
        if hashed is None:  # murmur2 is pure Python: remember it per key
            hashed = self._key_hashes.remember(key, murmur2(key) & 0x7FFFFFFF)
        return hashed


def _raise_first(futures: list[asyncio.Future[Any]]) -> None:
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's error as seen (the batch already failed)."""
    if not future.cancelled():
        future.exception()


def _needs_new_producer(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    if type(exc).__name__ in _FATAL_ERRORS:
        return True
    return isinstance(exc, KafkaError) and not exc.retriable


def _translate(exc: BaseException, sink: str, step: str) -> SinkError:
    """The ``SinkError`` for an aiokafka, socket or timeout failure."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):
        return SinkUnavailableError(f"{step} timed out", sink=sink)
    if name == "MessageSizeTooLargeError":
        return SinkError(f"{step} failed: {name}: {exc}", sink=sink, retriable=False)
    return SinkUnavailableError(f"{step} failed: {name}: {exc}", sink=sink)


def _build(settings: KafkaSinkSettings, runtime: Runtime) -> KafkaSink:
    return KafkaSink(settings, runtime)


SINKS.register("kafka", KafkaSinkSettings, _build, "Kafka topics for events and alerts")

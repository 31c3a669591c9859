"""Per-sink drivers of the benchmark: each starts its receiver, runs the full
pipeline into the sink and the minimal forwarder into the same receiver, and
returns both ``Result``s. ``run_sink`` is what ``python -m bench`` runs, in a
fresh process per sink.

Receivers: the file sink writes a temporary file; Kafka goes to a tansu
started here; HEC to the project's emulator in a process of its own
(``bench.hec_server``); syslog to rsyslogd over TCP, started as the tests
start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import structlog

from bench.pipeline_bench import (
    LineCounter,
    Result,
    arrival,
    file_writer,
    run_forwarder,
    run_pipeline,
)
from collector.app import build_channel

HEC_TOKEN = "0b0a0d17-0000-4000-8000-00000000be4c"
FORWARDER_TOPIC = "bbaudit.events"


class Skipped(Exception):
    """A sink's receiver is not installed here; the message says how to fix it."""


def run_sink(sink: str, events: int, data: str) -> tuple[Result, Result]:
    """The full and the minimal run of one sink; ``Skipped`` if it cannot run."""
    runner = DRIVERS.get(sink)
    if runner is None:
        raise ValueError(f"no bench driver (known: {', '.join(DRIVERS)})")
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR)
    )
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(runner(events, data))


async def bench_file(events: int, data: str) -> tuple[Result, Result]:
    """The file sink (fsync per batch) against an fsyncing line writer."""
    from sinks.file import FileSinkSettings

    with tempfile.TemporaryDirectory(prefix="bbaudit-bench-file-") as tmp:
        settings = FileSinkSettings(
            kind="file", name="file", path=Path(tmp) / "out.jsonl", batch_max_wait=0.05
        )

        channel = partial(build_channel, settings)

        full = await run_pipeline("file", events, channel, data)
        minimal = await run_forwarder(
            "file", events, file_writer(Path(tmp) / "min.jsonl"), data
        )
    return full, minimal


async def bench_kafka(events: int, data: str) -> tuple[Result, Result]:
    """The Kafka sink against a bare producer, both to a tansu started here."""
    from aiokafka import AIOKafkaProducer

    from sinks.kafka import KafkaSinkSettings, producer_options
    from tests.kafka_broker import TansuBroker, free_port, tansu_binary

    binary = tansu_binary()
    if binary is None:
        raise Skipped("tansu missing: run tests/infra/install_kafka.sh")
    with tempfile.TemporaryDirectory(prefix="bbaudit-bench-kafka-") as tmp:
        broker = TansuBroker(binary, free_port(), Path(tmp) / "tansu.log")
        await broker.astart()
        try:
            settings = KafkaSinkSettings(
                kind="kafka", name="kafka", bootstrap_servers=[broker.bootstrap],
                enable_idempotence=False, compression="lz4", linger_ms=5,
                batch_max_records=2000, batch_max_wait=0.05,
            )  # fmt: skip

            channel = partial(build_channel, settings)

            full = await run_pipeline("kafka", events, channel, data)
            producer = AIOKafkaProducer(**producer_options(settings))
            await producer.start()

            write = partial(_kafka_batches, producer, await _partition_of(producer))
            try:
                minimal = await run_forwarder("kafka", events, write, data)
            finally:
                await producer.stop()
        finally:
            broker.stop()
    # Both sides wait for acks=all, so what returned is what the broker has.
    return full, minimal


async def bench_hec(events: int, data: str) -> tuple[Result, Result]:
    """The HEC sink (gzip, no acks) against httpx posting stacked envelopes.

    Both post to the project's HEC emulator, run in a process of its own and
    counting what it indexed, over loopback http.
    """
    import httpx

    from bench.hec_server import HecServer
    from sinks.splunk_hec import SplunkHecSettings

    server = HecServer(HEC_TOKEN)
    try:
        settings = SplunkHecSettings(
            kind="splunk_hec", name="hec", url=server.url, token=HEC_TOKEN,
            batch_max_wait=0.05,
        )  # fmt: skip

        channel = partial(build_channel, settings)

        counted = arrival(server.indexed)
        full = await run_pipeline("hec", events, channel, data, counted)
        minimal = await _hec_forwarder(httpx, server, events, data, settings.gzip)
    finally:
        server.close()
    return full, minimal


async def _hec_forwarder(
    httpx: Any, server: Any, events: int, data: str, compress: bool
) -> Result:
    """Stacked ``{"time", "event"}`` envelopes per batch, one POST awaited each."""
    client = httpx.AsyncClient(
        base_url=server.url,
        headers={"Authorization": f"Splunk {HEC_TOKEN}"},
        trust_env=False,
    )

    def envelope(record: dict[str, Any]) -> bytes:
        stamp = record["timestamp"]
        moment = stamp["epochSecond"] + stamp["nano"] / 1e9
        return orjson.dumps({"time": moment, "event": record})

    async def write(lines: list[bytes]) -> None:
        body, headers = b"\n".join(lines), {}
        if compress:
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        response = await client.post(
            "/services/collector/event", content=body, headers=headers
        )
        response.raise_for_status()

    try:
        counted = arrival(server.indexed)
        return await run_forwarder("hec", events, write, data, counted, envelope)
    finally:
        await client.aclose()


async def bench_syslog(events: int, data: str) -> tuple[Result, Result]:
    """The syslog sink (TCP, octet counting, JSON) against a bare stream writer.

    Both write to an rsyslogd started here; the clock stops once rsyslog has
    written out every message (TCP has no answers, a drain is not arrival).
    """
    from sinks.syslog import SyslogSinkSettings

    with started_rsyslog() as receiver:
        settings = SyslogSinkSettings(
            kind="syslog", name="syslog", host="127.0.0.1",
            port=receiver.tcp_port, transport="tcp", batch_max_wait=0.05,
        )  # fmt: skip

        channel = partial(build_channel, settings)

        # The parsed copy has short lines: cheaper to count than the raw one.
        lines = LineCounter(receiver.parsed_file)
        full = await run_pipeline("syslog", events, channel, data, arrival(lines))
        minimal = await _syslog_forwarder(receiver.tcp_port, events, data, lines)
    return full, minimal


@contextlib.contextmanager
def started_rsyslog() -> Iterator[Any]:
    """rsyslogd as the tests run it, in a temporary folder; stopped after."""
    import pytest

    from tests.syslog_receivers import RSYSLOGD, configure_rsyslog, make_pki

    if not Path(RSYSLOGD).exists() or shutil.which("openssl") is None:
        raise Skipped("rsyslogd or openssl missing: run tests/infra/install_rsyslog.sh")
    with tempfile.TemporaryDirectory(prefix="bbaudit-bench-syslog-") as tmp:
        (Path(tmp) / "pki").mkdir()
        (Path(tmp) / "rsyslog").mkdir()
        pki = make_pki(Path(tmp) / "pki")
        receiver = configure_rsyslog(Path(tmp) / "rsyslog", pki)
        try:
            receiver.start()
        except pytest.fail.Exception as exc:  # the helper reports as a test would
            raise RuntimeError(f"rsyslogd did not start: {exc}") from None
        try:
            yield receiver
        finally:
            receiver.stop()


async def _syslog_forwarder(
    port: int, events: int, data: str, lines: LineCounter
) -> Result:
    """Each record as JSON behind a fixed RFC 5424 header, octet-counted."""
    header = b"<134>1 - bench bbaudit - event - "
    _, writer = await asyncio.open_connection("127.0.0.1", port)

    def message(record: dict[str, Any]) -> bytes:
        body = header + orjson.dumps(record)
        return b"%d %b" % (len(body), body)

    async def write(frames: list[bytes]) -> None:
        writer.write(b"".join(frames))
        await writer.drain()

    try:
        counted = arrival(lines)
        return await run_forwarder("syslog", events, write, data, counted, message)
    finally:
        writer.close()
        await writer.wait_closed()


DRIVERS = {
    "file": bench_file,
    "kafka": bench_kafka,
    "hec": bench_hec,
    "syslog": bench_syslog,
}


async def _partition_of(producer: Any) -> int:
    """The partition the forwarder writes to: the one key ``k`` hashes to."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = sorted(await producer.partitions_for(FORWARDER_TOPIC))
    return int(DefaultPartitioner()(b"k", partitions, partitions))


async def _kafka_batches(producer: Any, partition: int, lines: list[bytes]) -> None:
    """Whole record batches with the producer's batch API, as the sink sends
    them (one ``send`` per record would make the floor slower than it is)."""
    futures, batch = [], producer.create_batch()
    for line in lines:
        if batch.append(timestamp=None, key=b"k", value=line) is None:
            futures.append(
                await producer.send_batch(batch, FORWARDER_TOPIC, partition=partition)
            )
            batch = producer.create_batch()
            batch.append(timestamp=None, key=b"k", value=line)
    futures.append(
        await producer.send_batch(batch, FORWARDER_TOPIC, partition=partition)
    )
    await asyncio.gather(*futures)

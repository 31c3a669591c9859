"""``python -m bench [--events N] [--sinks file,kafka,hec,syslog]``: the
pipeline per sink against a minimal forwarder, with events/s, the ratio and
peak RSS.

Kafka, Splunk HEC and syslog are the sinks the throughput target is for
(``target`` column: the pipeline at half the forwarder's rate or better). The
file row is information: its receiver costs nothing, so its ratio shows the
pipeline's own cost. A sink whose receiver is not installed is skipped with
the script that installs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from bench.pipeline_bench import (
    PROFILES,
    LineCounter,
    Result,
    arrival,
    file_writer,
    run_forwarder,
    run_pipeline,
)
from collector.plugins import Runtime

SINKS = ("file", "kafka", "hec", "syslog")
TARGETS = {"kafka": ">=0.5", "hec": ">=0.5", "syslog": ">=0.5"}
UNCOUNTED = {"kafka": "acked", "file": "fsynced"}
HEC_TOKEN = "0b0a0d17-0000-4000-8000-00000000be4c"


class Skipped(Exception):
    """A sink's receiver is not installed here; the message says how to fix it."""


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run each sink's pair of measurements, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--sinks", default=",".join(SINKS))
    parser.add_argument(
        "--results", type=Path, help="also write the table as markdown here"
    )
    parser.add_argument(
        "--data",
        choices=PROFILES,
        default="pool",
        help="pool: a few hundred users and addresses; random: every address new",
    )
    args = parser.parse_args(argv)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR)
    )
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    results: list[tuple[Result, Result]] = []
    failed = False
    for sink in args.sinks.split(","):
        runner = DRIVERS.get(sink)
        if runner is None:
            print(f"sink {sink}: no bench driver (known: {', '.join(DRIVERS)})")
            failed = True
            continue
        try:
            results.append(asyncio.run(runner(args.events, args.data)))
        except Skipped as exc:
            print(f"sink {sink}: skipped, {exc}", file=sys.stderr)
    report(results)
    if args.results is not None:
        args.results.write_text(markdown(results, argv, args.data))
    return 1 if failed or not all(f.complete and m.complete for f, m in results) else 0


async def bench_file(events: int, data: str) -> tuple[Result, Result]:
    """The file sink (fsync per batch) against an fsyncing line writer."""
    from sinks.delivery import DeliveryChannel
    from sinks.file import FileSink, FileSinkSettings

    with tempfile.TemporaryDirectory(prefix="bbaudit-bench-file-") as tmp:
        settings = FileSinkSettings(
            kind="file", name="file", path=Path(tmp) / "out.jsonl", batch_max_wait=0.05
        )

        def channel(runtime: Runtime) -> Any:
            return DeliveryChannel(
                FileSink(settings), settings, runtime.metrics,
                spool_dir=runtime.state_dir / "spool" / "file",
            )  # fmt: skip

        full = await run_pipeline("file", events, channel, data)
        minimal = await run_forwarder(
            "file", events, file_writer(Path(tmp) / "min.jsonl"), data
        )
    return full, minimal


async def bench_kafka(events: int, data: str) -> tuple[Result, Result]:
    """The Kafka sink against a bare producer, both to a tansu started here."""
    from aiokafka import AIOKafkaProducer

    from sinks.delivery import DeliveryChannel
    from sinks.kafka import KafkaSink, KafkaSinkSettings, producer_options
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

            def channel(runtime: Runtime) -> Any:
                return DeliveryChannel(
                    KafkaSink(settings), settings, runtime.metrics,
                    spool_dir=runtime.state_dir / "spool" / "kafka",
                )  # fmt: skip

            full = await run_pipeline("kafka", events, channel, data)
            producer = AIOKafkaProducer(**producer_options(settings))
            await producer.start()

            async def write(lines: list[bytes]) -> None:
                futures = [
                    await producer.send("bbaudit.events", line, key=b"k")
                    for line in lines
                ]
                await asyncio.gather(*futures)

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
    from sinks.delivery import DeliveryChannel
    from sinks.splunk_hec import SplunkHecSettings, SplunkHecSink

    server = HecServer(HEC_TOKEN)
    try:
        settings = SplunkHecSettings(
            kind="splunk_hec", name="hec", url=server.url, token=HEC_TOKEN,
            batch_max_wait=0.05,
        )  # fmt: skip

        def channel(runtime: Runtime) -> Any:
            return DeliveryChannel(
                SplunkHecSink(settings, runtime), settings, runtime.metrics,
                spool_dir=runtime.state_dir / "spool" / "hec",
            )  # fmt: skip

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
    from sinks.delivery import DeliveryChannel
    from sinks.syslog import SyslogSink, SyslogSinkSettings

    with started_rsyslog() as receiver:
        settings = SyslogSinkSettings(
            kind="syslog", name="syslog", host="127.0.0.1",
            port=receiver.tcp_port, transport="tcp", batch_max_wait=0.05,
        )  # fmt: skip

        def channel(runtime: Runtime) -> Any:
            return DeliveryChannel(
                SyslogSink(settings, runtime), settings, runtime.metrics,
                spool_dir=runtime.state_dir / "spool" / "syslog",
            )  # fmt: skip

        # The parsed copy has short lines: cheaper to count than the raw one.
        lines = LineCounter(receiver.parsed_file)
        full = await run_pipeline("syslog", events, channel, data, arrival(lines))
        minimal = await _syslog_forwarder(receiver.tcp_port, events, data, lines)
    return full, minimal


@contextlib.contextmanager
def started_rsyslog() -> Iterator[Any]:
    """rsyslogd as the tests run it, in a temporary folder; stopped after."""
    from tests.syslog_receivers import RSYSLOGD, configure_rsyslog, make_pki

    if not Path(RSYSLOGD).exists():
        raise Skipped("rsyslogd missing: run tests/infra/install_rsyslog.sh")
    with tempfile.TemporaryDirectory(prefix="bbaudit-bench-syslog-") as tmp:
        (Path(tmp) / "pki").mkdir()
        (Path(tmp) / "rsyslog").mkdir()
        pki = make_pki(Path(tmp) / "pki")
        receiver = configure_rsyslog(Path(tmp) / "rsyslog", pki)
        receiver.start()
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


def report(results: list[tuple[Result, Result]]) -> None:
    """Print one line per sink: rates, ratio, target, arrival, RSS, stages."""
    header = (
        f"{'sink':<7}{'events':>9}{'full ev/s':>11}{'min ev/s':>11}{'ratio':>7}"
        f"{'target':>8}{'arrived':>9}{'RSS@100k':>10}{'RSS end':>9}  stages"
    )
    print(header)
    for full, minimal in results:
        ratio = full.rate / minimal.rate if minimal.rate else 0.0
        print(
            f"{full.label:<7}{full.events:>9}{full.rate:>11.0f}{minimal.rate:>11.0f}"
            f"{ratio:>7.2f}{target(full):>8}{arrived(full, minimal):>9}"
            f"{full.rss_at_mark:>9.0f}M{full.rss_peak:>8.0f}M  {full.extras}"
        )


def target(full: Result) -> str:
    """``>=0.5`` for the sinks the throughput target is for, else ``info``."""
    return TARGETS.get(full.label, "info")


def arrived(full: Result, minimal: Result) -> str:
    """``all`` when both receivers counted everything; ``acked`` (Kafka,
    acks=all) or ``fsynced`` (file) when the writes themselves confirm it;
    else how many each run missed (full/minimal)."""
    if full.arrived is None and minimal.arrived is None:
        return UNCOUNTED.get(full.label, "-")
    if full.complete and minimal.complete:
        return "all"
    return (
        f"-{full.sent - (full.arrived or 0)}/-{minimal.sent - (minimal.arrived or 0)}"
    )


def markdown(
    results: list[tuple[Result, Result]], argv: list[str] | None, data: str
) -> str:
    """The figures as a markdown page: command, machine load, one row per sink."""
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# Pipeline benchmark results",
        "",
        "Generated by `bench/__main__.py --results`; do not edit by hand.",
        "",
        f"- command: `PYTHONPATH=. .venv/bin/{command}`",
        f"- data profile: `{data}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}",
        f"- load average (1/5/15 min) at start: {_LOAD_START}; at end: {load}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        "| sink | events | full ev/s | minimal ev/s | ratio | target | arrived "
        "| peak RSS @100k | peak RSS end | stages |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for full, minimal in results:
        ratio = full.rate / minimal.rate if minimal.rate else 0.0
        lines.append(
            f"| {full.label} | {full.events} | {full.rate:.0f} | {minimal.rate:.0f} "
            f"| {ratio:.2f} | {target(full)} | {arrived(full, minimal)} "
            f"| {full.rss_at_mark:.0f} MiB | {full.rss_peak:.0f} MiB "
            f"| {full.extras} |"
        )
    return "\n".join(lines) + "\n"


_LOAD_START = " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m bench [--events N] [--sinks file,kafka]``: the pipeline per sink
against a minimal forwarder, with events/s, the ratio and peak RSS."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from bench.pipeline_bench import (
    PROFILES,
    Result,
    file_writer,
    run_forwarder,
    run_pipeline,
)
from collector.plugins import Runtime

SINKS = ("file", "kafka")


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
    for sink in args.sinks.split(","):
        runner = {"file": bench_file, "kafka": bench_kafka}.get(sink)
        if runner is None:
            # TODO: HEC and syslog drivers, matters when comparing those sinks
            print(f"sink {sink}: no bench driver, skipped", file=sys.stderr)
            continue
        results.append(asyncio.run(runner(args.events, args.data)))
    report(results)
    if args.results is not None:
        args.results.write_text(markdown(results, argv, args.data))
    return 0


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
        raise SystemExit("tansu missing: run tests/infra/install_kafka.sh")
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
    return full, minimal


def report(results: list[tuple[Result, Result]]) -> None:
    """Print one line per sink: rates, ratio, RSS at 100k and at the end."""
    header = (
        f"{'sink':<7}{'events':>9}{'full ev/s':>11}{'min ev/s':>11}{'ratio':>7}"
        f"{'RSS@100k':>10}{'RSS end':>9}  stages"
    )
    print(header)
    for full, minimal in results:
        ratio = full.rate / minimal.rate if minimal.rate else 0.0
        print(
            f"{full.label:<7}{full.events:>9}{full.rate:>11.0f}{minimal.rate:>11.0f}"
            f"{ratio:>7.2f}{full.rss_at_mark:>9.0f}M{full.rss_peak:>8.0f}M  "
            f"{full.extras}"
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
        "| sink | events | full ev/s | minimal ev/s | ratio | peak RSS @100k "
        "| peak RSS end | stages |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for full, minimal in results:
        ratio = full.rate / minimal.rate if minimal.rate else 0.0
        lines.append(
            f"| {full.label} | {full.events} | {full.rate:.0f} | {minimal.rate:.0f} "
            f"| {ratio:.2f} | {full.rss_at_mark:.0f} MiB | {full.rss_peak:.0f} MiB "
            f"| {full.extras} |"
        )
    return "\n".join(lines) + "\n"


_LOAD_START = " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())

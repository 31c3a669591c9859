"""Cost of the per-event hot path, warm: normalize, id, and each renderer.

Parses generated Data Center records (``bench.pipeline_bench.generate``)
untimed, then times each step over all of them, best of several passes:
``normalize_dc``, ``dc_event_id`` alone, and ``render`` in ``ecs``, ``ocsf``
and ``raw`` plus the CEF line. Events carry a small enrichment context
(``zones``, as with the pipeline bench's enrichers). Prints microseconds per
event.

    .venv/bin/python bench/bench_render.py [--events 20000] [--passes 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.pipeline_bench import generate
from collector.app import tune_gc
from collector.ids import dc_event_id
from collector.model import AuditEvent
from collector.normalize.dc import normalize_dc
from sinks import cef
from sinks.render import render

# Warm figures the hot path should reach, in microseconds per event.
TARGETS_US = {"normalize": 12.0, "ecs": 7.0, "raw": 8.0}


def load(count: int) -> list[dict[str, Any]]:
    """``count`` generated records, parsed."""
    return [orjson.loads(line) for line in generate(count)]


def _epoch_ns(record: dict[str, Any]) -> int:
    stamp = record["timestamp"]
    return int(stamp["epochSecond"]) * 1_000_000_000 + int(stamp.get("nano", 0))


def steps(
    records: list[dict[str, Any]], events: list[AuditEvent]
) -> dict[str, Callable[[], None]]:
    """Name -> a function that runs that step once over every record or event."""
    epochs = [_epoch_ns(r) for r in records]

    def normalize() -> None:
        for record in records:
            normalize_dc(record, instance="bb", source_kind="bench")

    def ids() -> None:
        for record, epoch in zip(records, epochs, strict=True):
            dc_event_id("bb", record, epoch)

    def renderer(fmt: str) -> Callable[[], None]:
        def run() -> None:
            for event in events:
                render(event, fmt)

        return run

    def cef_lines() -> None:
        for event in events:
            cef.format_record(event)

    return {
        "normalize": normalize,
        "id": ids,
        "ecs": renderer("ecs"),
        "ocsf": renderer("ocsf"),
        "raw": renderer("raw"),
        "cef": cef_lines,
    }


def best_of(run: Callable[[], None], passes: int) -> float:
    """The fastest of ``passes`` timed runs (after one warm-up run), in seconds."""
    run()
    timings = []
    for _ in range(passes):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main(count: int, passes: int) -> dict[str, float]:
    records = load(count)
    events = [normalize_dc(r, instance="bb", source_kind="bench") for r in records]
    for index, event in enumerate(events):
        event.context["zones"] = ["office"] if index % 4 else ["vpn", "office"]
    tune_gc()  # as the service does once it is loaded

    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"events={count} passes={passes} (best pass, warm) load average {load_avg}")
    figures = {}
    for name, run in steps(records, events).items():
        figures[name] = best_of(run, passes) / count * 1e6
        target = TARGETS_US.get(name)
        note = f"  (target <= {target:.0f})" if target else ""
        print(f"{name:<10} {figures[name]:7.2f} us/event{note}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    main(args.events, args.passes)

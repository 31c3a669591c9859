"""Cost of the per-event hot path, warm: normalize, id, and each renderer.

Generated Data Center records (``bench.pipeline_bench.generate``) go through
in batches of 500, as in the pipeline: each batch is parsed untimed, then
each step is timed over the whole batch: ``normalize_dc``, ``dc_event_id``
alone, ``render`` in ``ecs``, ``ocsf`` and ``raw``, and the CEF line. Events
carry a small enrichment context (``zones``, as with the pipeline bench's
enrichers). The cyclic GC runs between batches, untimed. One pass warms up;
the best of the timed passes is printed per step, in microseconds per event.

    .venv/bin/python bench/bench_render.py [--events 20000] [--passes 5]
"""

from __future__ import annotations

import argparse
import gc
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

BATCH = 500
STEPS = ("normalize", "id", "ecs", "ocsf", "raw", "cef")
# Warm figures the hot path should reach, in microseconds per event.
TARGETS_US = {"normalize": 12.0, "ecs": 7.0, "raw": 8.0}


def _epoch_ns(record: dict[str, Any]) -> int:
    stamp = record["timestamp"]
    return int(stamp["epochSecond"]) * 1_000_000_000 + int(stamp.get("nano", 0))


def _normalize(records: list[dict[str, Any]]) -> list[AuditEvent]:
    return [normalize_dc(r, instance="bb", source_kind="bench") for r in records]


def _ids(records: list[dict[str, Any]]) -> None:
    for record in records:
        dc_event_id("bb", record, _epoch_ns(record))


def _renderer(fmt: str) -> Callable[[list[AuditEvent]], None]:
    def run(events: list[AuditEvent]) -> None:
        for event in events:
            render(event, fmt)

    return run


def _cef(events: list[AuditEvent]) -> None:
    for event in events:
        cef.format_record(event)


def run_pass(lines: list[bytes]) -> dict[str, float]:
    """Seconds spent in each step over all ``lines``."""
    spent = dict.fromkeys(STEPS, 0.0)
    renderers = {fmt: _renderer(fmt) for fmt in ("ecs", "ocsf", "raw")}
    for start in range(0, len(lines), BATCH):
        records = [orjson.loads(line) for line in lines[start : start + BATCH]]
        # Untimed: what a cyclic collection costs depends on everything else
        # alive in the process, not on these steps.
        gc.collect()

        began = time.perf_counter()
        events = _normalize(records)
        spent["normalize"] += time.perf_counter() - began
        for index, event in enumerate(events):
            event.context["zones"] = ["office"] if index % 4 else ["vpn", "office"]

        began = time.perf_counter()
        _ids(records)
        spent["id"] += time.perf_counter() - began

        for fmt, run in renderers.items():
            began = time.perf_counter()
            run(events)
            spent[fmt] += time.perf_counter() - began

        began = time.perf_counter()
        _cef(events)
        spent["cef"] += time.perf_counter() - began
    return spent


def main(count: int, passes: int) -> dict[str, float]:
    lines = list(generate(count))
    tune_gc()  # as the service does once it is loaded

    run_pass(lines)  # warm-up: caches, allocator
    runs = [run_pass(lines) for _ in range(passes)]

    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"events={count} batch={BATCH} passes={passes} (best pass, warm)")
    print(f"load average {load_avg}")
    figures = {}
    for step in STEPS:
        figures[step] = min(r[step] for r in runs) / count * 1e6
        target = TARGETS_US.get(step)
        note = f"  (target <= {target:.0f})" if target else ""
        print(f"{step:<10} {figures[step]:7.2f} us/event{note}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    main(args.events, args.passes)

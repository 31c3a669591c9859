"""``bbaudit replay``: recorded files through the same stages, into JSONL files."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from collector.app import load_plugins, run_service
from collector.config import AppSettings, load_config, parse_config
from collector.metrics import Metrics
from collector.plugins import Runtime
from collector.replay import ReplaySource
from collector.stages import Source


def replay_settings(
    out_dir: Path, state_dir: Path, fmt: str, base: AppSettings | None
) -> AppSettings:
    """Settings for a replay: the base config's enrichers and detections, two
    JSONL file sinks, a throwaway state directory, no live sources."""
    data: dict[str, Any] = {
        "state_dir": str(state_dir),
        "http": {"enabled": False},
        "sinks": [
            _file_sink("events", out_dir / "events.jsonl", "events", fmt),
            _file_sink("alerts", out_dir / "alerts.jsonl", "alerts", fmt),
        ],
    }
    if base is not None:
        data["enrichers"] = [e.model_dump(mode="json") for e in base.enrichers]
        data["detections"] = base.detections.model_dump(mode="json")
    return parse_config(data)


def _file_sink(name: str, path: Path, receives: str, fmt: str) -> dict[str, Any]:
    return {
        "kind": "file",
        "name": name,
        "path": str(path),
        "receives": [receives],
        "format": fmt,
        "fsync": False,
    }


def run_replay(args: argparse.Namespace) -> int:
    """Replay ``args.files`` into ``args.out``; prints a summary; returns 0."""
    load_plugins()
    base = load_config(args.config) if args.config else None
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("events.jsonl", "alerts.jsonl"):
        (out_dir / name).unlink(missing_ok=True)

    metrics = Metrics()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bbaudit-replay-") as state_dir:
        settings = replay_settings(out_dir, Path(state_dir), args.format, base)

        def sources(runtime: Runtime) -> list[Source]:
            return [
                ReplaySource(
                    list(args.files),
                    instance=args.instance,
                    metrics=metrics,
                    runtime=runtime,
                )
            ]

        stats = asyncio.run(
            run_service(
                settings,
                follow=False,
                metrics=metrics,
                extra_sources=sources,
                gc_tuning=True,
            )
        )

    elapsed = time.monotonic() - started
    print(f"replayed {len(args.files)} file(s) in {elapsed:.1f}s")
    print(f"  events read      {stats.read}")
    print(f"  events written   {stats.new}  -> {out_dir / 'events.jsonl'}")
    print(f"  duplicates       {stats.deduped}")
    print(f"  rejected records {stats.rejected}")
    print(f"  alerts           {stats.alerts}  -> {out_dir / 'alerts.jsonl'}")
    for rule, count in sorted(stats.alerts_by_rule.items()):
        print(f"    {rule:<40} {count}")
    return 0

"""``bbaudit demo``: the whole main job on simulated data, with one command.

It builds a simulated organisation (people, projects, networks, working hours
and a handful of attack stories), serves it from a local Bitbucket simulator on
loopback (DC auditing API and Atlassian organization events-stream), writes the
DC access log and a directory export, builds a GeoIP database from the
simulated networks, runs the real pipeline against all of it with embedded
defaults, stops when caught up and prints what it saw.

``--hold SECONDS`` keeps ``/metrics``, ``/healthz`` and ``/readyz`` answering
on the same port for that long after the pipeline caught up, so the final
counters can be scraped; ``/readyz`` then answers 503 because the pipeline has
finished.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from collector.app import load_plugins, run_service
from collector.config import AppSettings, parse_config
from collector.metrics import Metrics
from collector.model import Alert
from collector.pipeline import PipelineStats

_ALLOWED_ZONES = ("office", "vpn", "ci-runners")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo into ``args.out``; returns the exit code."""
    from collector.simulator import build_world
    from collector.simulator.server import SimulatorServer

    load_plugins()
    out: Path = args.out
    _reset(out)
    started = time.monotonic()
    print(f"bbaudit demo: building a world of {args.users} people, {args.days} days")
    world = build_world(args.seed, users=args.users, days=args.days)
    inputs = _write_inputs(world, out)

    alerts: list[Alert] = []
    metrics = Metrics()
    token = args.token or secrets.token_urlsafe(24)
    with SimulatorServer(world, token=token) as simulator:
        print(f"bbaudit demo: simulator on {simulator.base_url}")
        settings = demo_settings(world, simulator.base_url, token, out, inputs, args)
        stats = asyncio.run(
            run_service(
                settings,
                follow=False,
                on_alert=alerts.append,
                metrics=metrics,
                gc_tuning=True,
            )
        )

    elapsed = time.monotonic() - started
    _print_summary(stats, alerts, world, out, elapsed)
    if args.hold > 0:
        asyncio.run(_hold(settings, metrics, stats, args.hold))
    return 0


async def _hold(
    settings: AppSettings, metrics: Metrics, stats: PipelineStats, seconds: float
) -> None:
    """Serve the finished run's metrics and probes for ``seconds``."""
    from collector.http_server import HealthServer

    reasons = {"pipeline": "finished", "caught_up": sorted(stats.caught_up)}
    server = HealthServer(
        settings.http.host, settings.http.port, metrics, lambda: (False, reasons)
    )
    await server.start()
    url = f"http://{settings.http.host}:{server.port}"
    print(f"bbaudit demo: holding {url}/metrics for {seconds:g}s", flush=True)
    try:
        await asyncio.sleep(seconds)
    finally:
        await server.aclose()


def _reset(out: Path) -> None:
    """Start from nothing so that a second run shows the same picture."""
    for name in ("state", "bitbucket-home", "events.jsonl", "alerts.jsonl"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_inputs(world: Any, out: Path) -> dict[str, Path]:
    from enrichers.mmdb_writer import write_city_asn_mmdbs

    home = out / "bitbucket-home"
    world.write_files(home)
    directory = out / "directory.csv"
    world.write_directory_csv(directory)
    city, asn = out / "geo-city.mmdb", out / "geo-asn.mmdb"
    write_city_asn_mmdbs(world.networks, city, asn)
    return {"home": home, "directory": directory, "city": city, "asn": asn}


def demo_settings(
    world: Any,
    base_url: str,
    token: str,
    out: Path,
    inputs: dict[str, Path],
    args: argparse.Namespace,
) -> AppSettings:
    """The config the demo runs with, as a user would write it."""
    lookback = f"{int(args.days * 24 + 2)}h"
    return parse_config(
        {
            "state_dir": str(out / "state"),
            "http": {"enabled": True, "port": args.http_port},
            "sources": [
                {
                    "kind": "dc_rest",
                    "name": "dc-rest",
                    "instance": world.instance,
                    "base_url": base_url,
                    "auth": {"token": token},
                    "lookback": lookback,
                    "settle_lag": 0,
                    "limit": 1000,
                },
                {
                    "kind": "dc_access_log",
                    "name": "dc-access-log",
                    "instance": world.instance,
                    "path": str(
                        inputs["home"] / "log" / "atlassian-bitbucket-access*.log"
                    ),
                },
                {
                    "kind": "cloud_org",
                    "name": "cloud",
                    "org_id": world.org_id,
                    "api_key": token,
                    "base_url": base_url,
                    "lookback": lookback,
                    "limit": 500,
                },
            ],
            "enrichers": _enrichers(world, inputs),
            "detections": {
                "learning_period": "20h",
                "allowlist_zones": list(_ALLOWED_ZONES),
                "vpn_zones": ["vpn"],
            },
            "sinks": [
                {
                    "kind": "file",
                    "name": "events",
                    "path": str(out / "events.jsonl"),
                    "receives": ["events"],
                    "fsync": False,
                },
                {
                    "kind": "file",
                    "name": "alerts",
                    "path": str(out / "alerts.jsonl"),
                    "receives": ["alerts"],
                },
            ],
        }
    )


def _enrichers(world: Any, inputs: dict[str, Path]) -> list[dict[str, Any]]:
    zones: dict[str, list[str]] = {}
    for site in world.networks:
        if site.zone in _ALLOWED_ZONES:
            zones.setdefault(site.zone, []).append(site.cidr)
    tags = world.repo_tags()
    rules = [
        {"project": key, "tags": value["tags"], "sensitivity": value["sensitivity"]}
        for key, value in tags["projects"].items()
        if value["tags"]
    ]
    rules += [
        {
            "project": name.split("/", 1)[0],
            "repository": name.split("/", 1)[1],
            "tags": value["tags"],
            "sensitivity": value["sensitivity"],
        }
        for name, value in tags["repositories"].items()
        if "crown-jewel" in value["tags"]
    ]
    return [
        {
            "kind": "identity_file",
            "name": "directory",
            "path": str(inputs["directory"]),
        },
        {
            "kind": "geoip",
            "name": "geoip",
            "city_db": str(inputs["city"]),
            "asn_db": str(inputs["asn"]),
            "lookup_documentation_ranges": True,
        },
        {"kind": "zones", "name": "zones", "zones": zones},
        {"kind": "repo_tags", "name": "repo-tags", "rules": rules},
    ]


def _print_summary(
    stats: PipelineStats, alerts: list[Alert], world: Any, out: Path, elapsed: float
) -> None:
    simulated = len(world.dc_events) + len(world.git_ops) + len(world.cloud_events)
    print()
    print("bbaudit demo: summary")
    print(f"  simulated audit records   {simulated}")
    print(f"  events read               {stats.read}")
    print(f"  events written            {stats.new}  -> {out / 'events.jsonl'}")
    print(f"  duplicates dropped        {stats.deduped}")
    print(f"  rejected records          {stats.rejected}")
    print(f"  elapsed                   {elapsed:.1f}s")
    print("  events per action:")
    for action, count in stats.actions.most_common():
        print(f"    {action:<40} {count:>7}")
    print(f"  alerts                    {len(alerts)}  -> {out / 'alerts.jsonl'}")
    for alert in sorted(alerts, key=lambda a: (a.time, a.rule_id)):
        when = alert.time.strftime("%Y-%m-%d %H:%M")
        print(
            f"    {when} {alert.severity:<8} {_rule_label(alert):<28} {alert.summary}"
        )
    print("  attack stories:")
    for story in world.stories:
        missing = [r for r in story.rule_ids if not _raised(r, story, alerts)]
        status = "caught" if not missing else f"missed {', '.join(missing)}"
        print(f"    {story.name:<24} {story.actor:<18} {status}")


def _rule_label(alert: Alert) -> str:
    """The rule id, or for a Sigma rule (a UUID) ``sigma:`` and its first part."""
    if alert.rule_id.startswith("bb."):
        return alert.rule_id
    return f"sigma:{alert.rule_id[:8]}"


def _raised(rule_id: str, story: Any, alerts: list[Alert]) -> bool:
    """Whether an alert of ``rule_id`` was raised during the story.

    Stories list Sigma rules as ``sigma:<id>``; the alert keeps the bare id.
    The actor is not compared: a failed login's author is Anonymous and a Cloud
    actor is named by display name, so the story's time span is what ties an
    alert to it.
    """
    wanted = rule_id.removeprefix("sigma:")
    begin = story.start - timedelta(minutes=1)
    end = story.end + timedelta(minutes=30)
    return any(a.rule_id == wanted and begin <= a.time <= end for a in alerts)

"""Command line: ``python -m collector.simulator serve|write-files|stories``.

serve        run the HTTP simulator until interrupted; prints one JSON line
             with base_url, org_id and the stories when ready
write-files  write <DIR>/log/audit/*.log and the access logs, plus the
             directory export and repository tags
stories      print the injected stories as JSON lines
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from collector.simulator.faults import Faults
from collector.simulator.server import SimClock, SimulatorServer
from collector.simulator.world import World, build_world


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    # stdout carries the one JSON line a parent process reads; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    world = build_world(
        args.seed, users=args.users, days=args.days, end=_when(args.end)
    )
    if args.command == "serve":
        return _serve(world, args)
    if args.command == "write-files":
        return _write(world, Path(args.dir))
    for story in world.stories:
        print(json.dumps(_story_json(story)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collector.simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "write-files", "stories"):
        command = commands.add_parser(name)
        command.add_argument("--seed", type=int, default=7)
        command.add_argument("--users", type=int, default=300)
        command.add_argument("--days", type=float, default=2.0)
        command.add_argument("--end", help="ISO time the world ends (default: now)")
        if name == "write-files":
            command.add_argument("dir")
        if name == "serve":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=0)
            command.add_argument(
                "--mode", choices=("dc", "cloud", "both"), default="both"
            )
            command.add_argument(
                "--faults", default="", help="e.g. rate_limit_every=5,fail_page=2"
            )
            command.add_argument("--token", help="Bearer token to require")
            command.add_argument("--basic", help="user:password to accept")
            command.add_argument("--org-id")
            command.add_argument(
                "--clock",
                choices=("frozen", "live"),
                default="frozen",
                help="frozen 15 min after the world's end, or live "
                "from the world's end",
            )
            command.add_argument("--cursor-object", action="store_true")
            command.add_argument("--no-search-events", action="store_true")
    return parser


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _serve(world: World, args: argparse.Namespace) -> int:
    faults = Faults.parse(args.faults) if args.faults else Faults()
    apis = ("dc", "cloud") if args.mode == "both" else (args.mode,)
    clock = (
        SimClock.running(world.end)
        if args.clock == "live"
        else SimClock.frozen(world.end + timedelta(minutes=15))
    )
    basic = tuple(args.basic.split(":", 1)) if args.basic else None
    server = SimulatorServer(
        world,
        faults=faults,
        host=args.host,
        port=args.port,
        org_id=args.org_id,
        token=args.token,
        basic=basic if basic and len(basic) == 2 else None,
        clock=clock,
        cursor_object=args.cursor_object,
        search_events=not args.no_search_events,
        apis=apis,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with server:
        print(
            json.dumps(
                {
                    "base_url": server.base_url,
                    "org_id": server.org_id,
                    "instance": world.instance,
                    "dc_events": len(world.dc_events),
                    "cloud_events": len(world.cloud_events),
                    "stories": [_story_json(s) for s in world.stories],
                }
            ),
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


def _write(world: World, home: Path) -> int:
    paths = world.write_files(home)
    world.write_directory_csv(home / "directory.csv")
    world.write_directory_jsonl(home / "directory.jsonl")
    (home / "repo_tags.json").write_text(json.dumps(world.repo_tags(), indent=2))
    (home / "stories.jsonl").write_text(
        "".join(json.dumps(_story_json(s)) + "\n" for s in world.stories)
    )
    summary = {kind: [str(p) for p in items] for kind, items in paths.items()}
    print(json.dumps(summary))
    return 0


def _story_json(story: object) -> dict[str, object]:
    from collector.simulator.world import StoryInfo

    assert isinstance(story, StoryInfo)
    return {
        "name": story.name,
        "rule_ids": list(story.rule_ids),
        "actor": story.actor,
        "description": story.description,
        "start": story.start.isoformat(),
        "end": story.end.isoformat(),
        "source_ip": story.source_ip,
    }


if __name__ == "__main__":
    sys.exit(main())

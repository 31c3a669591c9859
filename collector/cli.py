"""The ``bbaudit`` command: run, validate, replay, demo, rules."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from collector import __version__
from collector.errors import ConfigError

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FAILED = 1
# --once read everything, but a sink was down: records wait in its spool.
EXIT_SPOOLED = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"bbaudit: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        # Start-up problems of the machine, not bugs: a state_dir that cannot
        # be created, a metrics port already in use. Say which, no traceback.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"bbaudit: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `bbaudit rules list | head`: the reader left; not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbaudit",
        description="Stream Bitbucket audit activity into a SIEM.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run the service from a config file")
    run.add_argument("-c", "--config", type=Path, required=True)
    run.add_argument(
        "--once", action="store_true", help="stop once every source is caught up"
    )
    run.set_defaults(handler=_run)

    validate = commands.add_parser("validate", help="check a config file")
    validate.add_argument("-c", "--config", type=Path, required=True)
    validate.add_argument(
        "--connect", action="store_true", help="also try to reach sources and sinks"
    )
    validate.set_defaults(handler=_validate)

    replay = commands.add_parser("replay", help="run recorded files offline")
    replay.add_argument("files", nargs="+", type=Path)
    replay.add_argument("-o", "--out", type=Path, default=Path("bbaudit-replay"))
    replay.add_argument(
        "-c", "--config", type=Path, help="take enrichers and detections from here"
    )
    replay.add_argument("--format", choices=["ecs", "ocsf", "raw"], default="ecs")
    replay.add_argument("--instance", default="bitbucket")
    replay.set_defaults(handler=_replay)

    demo = commands.add_parser("demo", help="run against a local Bitbucket simulator")
    demo.add_argument("-o", "--out", type=Path, default=Path("bbaudit-demo"))
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--users", type=int, default=300)
    demo.add_argument("--days", type=float, default=2.0)
    demo.add_argument("--token", help="simulator API token (default: random)")
    demo.add_argument(
        "--http-port", type=int, default=0, help="metrics/health port (0: any free)"
    )
    demo.add_argument(
        "--hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after catching up, keep /metrics, /healthz, /readyz up this long",
    )
    demo.set_defaults(handler=_demo)

    rules = commands.add_parser("rules", help="detection rules")
    rules_commands = rules.add_subparsers(metavar="ACTION")
    rules_list = rules_commands.add_parser("list", help="list every rule")
    rules_list.add_argument("-c", "--config", type=Path)
    rules_list.set_defaults(handler=_rules_list)
    return parser


def _load(path: Path):  # type: ignore[no-untyped-def]
    from collector.app import load_plugins
    from collector.config import load_config

    load_plugins()
    return load_config(path)


def _configure_logs(
    level: str = "info", fmt: str = "json", *, to_stderr: bool = False
) -> None:
    from collector.logs import configure_logging

    configure_logging(level=level, fmt=fmt, stream=sys.stderr if to_stderr else None)


def _run(args: argparse.Namespace) -> int:
    from collector.app import run_service

    settings = _load(args.config)
    # With a stdout sink, records own stdout and log lines go to stderr.
    records_on_stdout = any(sink.kind == "stdout" for sink in settings.sinks)
    _configure_logs(
        settings.log.level, settings.log.format, to_stderr=records_on_stdout
    )
    stats = asyncio.run(run_service(settings, follow=not args.once, gc_tuning=True))
    if args.once and stats.spooled_left:
        # A backfill job must not look finished while records wait on disk
        # for a sink that was down; the next run sends them.
        return EXIT_SPOOLED
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    print(f"{args.config}: valid", end="")
    print(
        f" ({len(settings.sources)} sources, {len(settings.enrichers)} enrichers, "
        f"{len(settings.sinks)} sinks)"
    )
    if not args.connect:
        return EXIT_OK

    from collector.validate import check_connectivity, format_validation_report

    results = asyncio.run(check_connectivity(settings))
    print(format_validation_report(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _replay(args: argparse.Namespace) -> int:
    from collector.replay_command import run_replay

    _configure_logs("warning")
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"bbaudit: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_CONFIG
    return run_replay(args)


def _demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo

    _configure_logs("warning")
    return run_demo(args)


def _rules_list(args: argparse.Namespace) -> int:
    from collector.app import load_plugins
    from collector.config import parse_config

    load_plugins()
    settings = _load(args.config) if args.config else parse_config({})
    from detections.catalog import format_rules_table

    print(format_rules_table(settings.detections))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

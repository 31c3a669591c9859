"""Write a world's DC log files the way a Bitbucket node lays them out.

Audit file (reference §3): ``<home>/log/audit/*.log``, JSON lines, oldest first,
rotated at midnight (UTC here) and at ``max_file_bytes``. Atlassian does not
document the file names; the simulator names each file after its first
moment, ``YYYYMMDD-HHMMSS.audit.log`` (the daily ones ``YYYYMMDD-000000``), so
that names sort in time order. **Unverified** against a live node.

Access log (reference §4): the current day in
``<home>/log/atlassian-bitbucket-access.log``, earlier days (and size
rotations) in ``atlassian-bitbucket-access-YYYY-MM-DD.N.log`` with ``N`` from 0,
the logback pattern Bitbucket uses for its other logs. Times are written in
UTC without a zone, as the real file writes server-local time without one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from collector.simulator.records import GitOp, WebRequest
from collector.simulator.world import World

ACCESS_LOG = "atlassian-bitbucket-access.log"

# (day "YYYY-MM-DD", first epoch ms in the file, part number) -> path
NameFor = Callable[[str, int, int], Path]


def write_files(
    world: World,
    home: Path,
    *,
    max_file_bytes: int | None = None,
    until: datetime | None = None,
) -> dict[str, list[Path]]:
    """Write the audit and access logs under ``home``; returns the paths, oldest first.

    ``until`` keeps only records before that moment (to write a prefix and
    append the rest later in a tailing test).
    """
    limit_ms = int((until or world.end).timestamp() * 1000)
    audit_dir = home / "log" / "audit"
    audit_dir.mkdir(parents=True, exist_ok=True)

    audit_lines = (
        (event.epoch_ms, json.dumps(event.file_line(), separators=(",", ":")))
        for event in world.dc_events
        if event.epoch_ms < limit_ms
    )
    audit = _write_rotated(
        audit_lines,
        max_file_bytes,
        lambda day, ms, n: audit_dir / _audit_name(day, ms, n),
    )

    access_lines = sorted(
        (
            pair
            for item in _access_items(world)
            for pair in item.lines()
            if pair[0] < limit_ms
        ),
        key=lambda pair: pair[0],
    )
    log_dir = home / "log"
    access = _write_rotated(
        iter(access_lines),
        max_file_bytes,
        lambda day, ms, n: log_dir / _access_name(day, n),
    )
    if access:
        current = log_dir / ACCESS_LOG
        access[-1].replace(current)
        access[-1] = current
    return {"audit": audit, "access": access}


def _access_items(world: World) -> list[GitOp | WebRequest]:
    return [*world.git_ops, *world.web_requests]


def _audit_name(day: str, first_ms: int, part: int) -> str:
    if part == 0:
        return f"{day.replace('-', '')}-000000.audit.log"
    moment = datetime.fromtimestamp(first_ms / 1000, UTC)
    return moment.strftime("%Y%m%d-%H%M%S") + f"-{part:03d}.audit.log"


def _access_name(day: str, part: int) -> str:
    return f"atlassian-bitbucket-access-{day}.{part}.log"


def _write_rotated(
    lines: Iterable[tuple[int, str]],
    max_bytes: int | None,
    name_for: NameFor,
) -> list[Path]:
    written: list[Path] = []
    handle = None
    current_day = ""
    part = 0
    size = 0
    try:
        for epoch_ms, text in lines:
            day = datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d")
            encoded = len(text) + 1
            new_day = day != current_day
            too_big = max_bytes is not None and size + encoded > max_bytes and size > 0
            if handle is None or new_day or too_big:
                if handle is not None:
                    handle.close()
                part = 0 if new_day else part + 1
                current_day = day
                path = name_for(day, epoch_ms, part)
                handle = path.open("w", encoding="utf-8")
                written.append(path)
                size = 0
            handle.write(text + "\n")
            size += encoded
    finally:
        if handle is not None:
            handle.close()
    return written


def iter_access_lines(home: Path) -> Iterator[str]:
    """Every access-log line under ``home``, oldest file first (for tests)."""
    log_dir = home / "log"
    rotated = sorted(
        log_dir.glob("atlassian-bitbucket-access-*.log"),
        key=lambda p: _rotation_key(p.name),
    )
    for path in [*rotated, log_dir / ACCESS_LOG]:
        if path.exists():
            yield from path.read_text(encoding="utf-8").splitlines()


def _rotation_key(name: str) -> tuple[str, int]:
    stem = name.removeprefix("atlassian-bitbucket-access-").removesuffix(".log")
    day, _, part = stem.rpartition(".")
    return day, int(part) if part.isdigit() else 0

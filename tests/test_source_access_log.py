"""The ``dc_access_log`` source and its normalizer: git operations from the access log.

Fixture lines follow the Bitbucket DC access-log format (Atlassian KB "How to
read the Bitbucket Server log formats"), fields separated by ``" | "`` and the
line ending in ``" |"``::

    ip | protocol | i/o request id | user | yyyy-MM-dd HH:mm:ss,SSS | action |
    details | status | bytes read | bytes written | labels | duration ms | session |

A request writes a start line (id ``i…``, ``-`` from status on) and an end line
(id ``o…``). Over HTTP the action is the quoted request line and details are
``"<referrer>" "<user agent>"``; over SSH the action is
``SSH - git-upload-pack '/proj/repo.git'``, details the SSH client version and the
status the git exit code. Labels name the git operation (``clone``, ``shallow
clone``, ``fetch``, ``push``, ``refs``) among others (``cache:miss``, ``ssh:id:…``).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.normalize.access_log import (
    AccessLine,
    client_address,
    detect_git_operation,
    normalize_access_line,
    parse_access_line,
)
from collector.plugins import SOURCES, Runtime
from collector.sources.access_log import AccessLogSettings, AccessLogSource
from collector.stages import SourceBatch
from collector.state import StateStore

UTC_ZONE = ZoneInfo("UTC")
GIT_UA = '"" "git/2.43.0"'
SSH_UA = '"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"'


def _line(
    rid: str,
    action: str,
    *,
    user: str = "jdoe",
    ip: str = "10.20.30.40",
    proto: str = "https",
    ts: str = "2026-03-02 10:15:30,250",
    details: str = GIT_UA,
    tail: tuple[str, ...] = ("-", "-", "-", "-", "-"),
    session: str = "1x9k2qv",
) -> str:
    return (
        " | ".join([ip, proto, rid, user, ts, action, details, *tail, session]) + " |"
    )


def _http(method: str, path: str) -> str:
    return f'"{method} {path} HTTP/1.1"'


def _end(rid: str, action: str, labels: str, **kw: Any) -> str:
    status = kw.pop("status", "200")
    return _line(rid, action, tail=(status, "1200", "5242880", labels, "1834"), **kw)


def _ssh(service: str, path: str) -> str:
    return f"SSH - {service} '{path}'"


UPLOAD = _http("POST", "/scm/proj/my-repo.git/git-upload-pack")
RECEIVE = _http("POST", "/scm/proj/my-repo.git/git-receive-pack")
REFS = _http("GET", "/scm/proj/my-repo.git/info/refs?service=git-upload-pack")


def _parse_end(line: str) -> AccessLine:
    record = parse_access_line(line)
    assert record.phase == "end"
    return record


# Parsing


def test_parses_full_end_line() -> None:
    """All thirteen fields of an end line are read, '-' becomes None."""
    record = _parse_end(_end("o*1V4MQ6x615x812x0", UPLOAD, "cache:miss, clone"))

    assert record.client_ip == "10.20.30.40"
    assert record.protocol == "https"
    assert record.request_key == "*1V4MQ6x615x812x0"
    assert record.user == "jdoe"
    assert record.status == 200
    assert (record.bytes_read, record.bytes_written) == (1200, 5242880)
    assert record.labels == ("cache:miss", "clone")
    assert record.duration_ms == 1834
    assert record.session == "1x9k2qv"
    assert record.details == GIT_UA


def test_parses_start_line_with_placeholders() -> None:
    """A start line has no status, bytes, labels or duration."""
    record = parse_access_line(_line("i*1V4MQ6x615x812x0", UPLOAD, user="-"))

    assert record.phase == "start"
    assert record.user is None
    assert (record.status, record.bytes_read, record.labels) == (None, None, ())
    assert record.details == GIT_UA


def test_parses_short_ssh_lines() -> None:
    """Older SSH lines: a start with two placeholders, an end without duration."""
    start = "10.1.1.5 | ssh | i*N65BDNx354x326907x0 | ci_bot | 2026-03-02 05:54:25,733"
    start += (
        f" | {_ssh('git-upload-pack', '/bar/tools.git')} | {SSH_UA} | - | - | y3r3kf |"
    )
    end = "10.1.1.5 | ssh | o*N65BDNx354x326903x0 | ci_bot | 2026-03-02 05:54:25,425"
    end += f" | {_ssh('git-upload-pack', '/foo/bar.git')} | - | 0 | 123 | 1024"
    end += " | cache:miss, clone, ssh:id:610, ssh:label:'ci key' | 1cl58rd |"

    first = parse_access_line(start)
    second = _parse_end(end)

    assert first.details == SSH_UA
    assert first.session == "y3r3kf"
    assert (second.status, second.bytes_written, second.duration_ms) == (0, 1024, None)
    assert second.session == "1cl58rd"
    assert "clone" in second.labels


def test_tolerates_missing_trailing_fields() -> None:
    """An end line cut after the bytes written still parses."""
    line = "10.0.0.9 | https | o@AAx1x2x0 | jdoe | 2026-03-02 10:00:00,001"
    line += f" | {UPLOAD} | {GIT_UA} | 200 | 10 | 20"

    record = _parse_end(line)

    assert (record.status, record.bytes_read, record.bytes_written) == (200, 10, 20)
    assert (record.labels, record.duration_ms, record.session) == ((), None, None)


@pytest.mark.parametrize(
    "agent",
    [
        '"" "JGit/6.7 (Eclipse; build 42) with spaces"',
        '"https://ci.example.test/job/1" "weird \\"quoted\\" agent"',
        '"" "クライアント/1.0 ünïcödé"',
        '"" "evil | 200 | 0 | 0 | push | 5 | abc"',
        '"" "pipe|no|spaces"',
    ],
)
def test_odd_user_agents_stay_in_details(agent: str) -> None:
    """User agents with spaces, quotes, unicode or ' | ' do not shift the fields."""
    record = _parse_end(_end("o*Qx1x1x0", UPLOAD, "clone", details=agent))

    assert record.details == agent
    assert record.status == 200
    assert record.labels == ("clone",)
    assert record.duration_ms == 1834


def test_forwarded_ip_chain_keeps_the_client() -> None:
    """A proxy chain in the IP field yields the first (client) address."""
    record = _parse_end(_end("o*Q1", UPLOAD, "fetch", ip="203.0.113.7,10.0.0.2"))

    assert record.client_ip == "203.0.113.7"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage without separators",
        "1.2.3.4 | https | x*bad | u | 2026-03-02 10:00:00,000 | GET / | - |",
        "1.2.3.4 | https | o*id | u | yesterday | GET / | - | 200 | 1 | 2 | - | 3 | s",
        "1.2.3.4 | https | o*id | u | 2026-03-02 10:00:00,000 | GET / | - | x | y |",
    ],
)
def test_malformed_lines_raise(line: str) -> None:
    """Lines without the fixed fields, a request id or a time raise ValueError."""
    with pytest.raises(ValueError):
        parse_access_line(line)


# Git operations


@pytest.mark.parametrize(
    ("action", "labels", "proto", "expected"),
    [
        (UPLOAD, "cache:miss, clone", "https", "clone"),
        (UPLOAD, "shallow clone", "https", "shallow_clone"),
        (UPLOAD, "clone, shallow", "http", "shallow_clone"),
        (UPLOAD, "fetch, protocol:2", "https", "fetch"),
        (UPLOAD, "-", "https", "fetch"),
        (RECEIVE, "push", "https", "push"),
        (REFS, "refs", "https", "refs"),
        (
            _ssh("git-upload-pack", "/proj/my-repo.git"),
            "clone, ssh:id:1",
            "ssh",
            "clone",
        ),
        (_ssh("git-upload-pack", "/proj/my-repo.git"), "fetch", "ssh", "fetch"),
        (
            _ssh("git-upload-pack", "/proj/my-repo.git"),
            "shallow clone",
            "ssh",
            "shallow_clone",
        ),
        (
            _ssh("git-upload-pack", "/proj/my-repo.git"),
            "cache:miss, refs",
            "ssh",
            "refs",
        ),
        (
            _ssh("git-receive-pack", "/proj/my-repo.git"),
            "push, ssh:id:9",
            "ssh",
            "push",
        ),
    ],
)
def test_git_operation_detection(
    action: str, labels: str, proto: str, expected: str
) -> None:
    """HTTP path and method or the SSH command, then labels, decide the operation."""
    record = _parse_end(_end("o*G1", action, labels, proto=proto))

    operation = detect_git_operation(record)

    assert operation is not None
    assert operation.operation == expected
    assert operation.repository_name == "PROJ/my-repo"


@pytest.mark.parametrize(
    "action",
    [
        _http("GET", "/rest/api/1.0/projects/PROJ/repos"),
        _http("GET", "/projects/PROJ/repos/my-repo/browse"),
        _http("GET", "/status"),
        _http("GET", "/scm/proj/my-repo.git/git-upload-pack"),
        "SSH - some-other-command",
    ],
)
def test_non_git_requests_are_not_operations(action: str) -> None:
    """REST, UI and odd requests yield no git operation."""
    assert detect_git_operation(_parse_end(_end("o*N1", action, "-"))) is None


def test_context_path_and_personal_repositories() -> None:
    """A context path before /scm and ~user projects are understood."""
    action = _http("POST", "/bitbucket/scm/%7Ejdoe/dotfiles.git/git-upload-pack")
    ssh = _ssh("git-upload-pack", "/~jdoe/dotfiles.git")

    http_op = detect_git_operation(_parse_end(_end("o*P1", action, "clone")))
    ssh_op = detect_git_operation(_parse_end(_end("o*P2", ssh, "clone", proto="ssh")))

    assert http_op is not None and http_op.repository_name == "~JDOE/dotfiles"
    assert ssh_op is not None and ssh_op.repository_name == "~JDOE/dotfiles"


# Audit events


def test_clone_becomes_audit_event() -> None:
    """A completed clone maps onto repo.cloned with the git context."""
    start = _line("i*C1", UPLOAD)
    end = _end("o*C1", UPLOAD, "cache:miss, clone")

    event = normalize_access_line(
        end, instance="bb-prod", timezone=UTC_ZONE, start_line=start
    )

    assert event is not None
    assert (event.action, event.category, event.outcome) == (
        "repo.cloned",
        "repository",
        "success",
    )
    assert (event.platform, event.source_kind, event.instance) == (
        "dc",
        "dc_access_log",
        "bb-prod",
    )
    assert event.actor.name == "jdoe"
    assert event.source_ip == "10.20.30.40"
    assert event.user_agent == "git/2.43.0"
    assert event.target_names("REPOSITORY") == ["PROJ/my-repo"]
    assert event.context["git"] == {
        "operation": "clone",
        "protocol": "https",
        "bytes_read": 1200,
        "bytes_written": 5242880,
        "duration_ms": 1834,
        "status": 200,
        "labels": ["cache:miss", "clone"],
    }
    assert event.raw == {"line": end, "start_line": start}
    assert event.id.startswith("dca-") and len(event.id) == 36
    assert event.time == datetime(2026, 3, 2, 10, 15, 30, 250000, tzinfo=UTC)


def test_actions_per_operation() -> None:
    """Shallow clones, fetches and pushes get their own actions."""
    cases = {
        "shallow clone": (UPLOAD, "repo.cloned", "shallow_clone"),
        "fetch": (UPLOAD, "repo.fetched", "fetch"),
        "push": (RECEIVE, "repo.pushed", "push"),
    }
    for labels, (action, expected, operation) in cases.items():
        event = normalize_access_line(
            _end("o*A1", action, labels), instance="i", timezone=UTC_ZONE
        )
        assert event is not None
        assert (event.action, event.context["git"]["operation"]) == (
            expected,
            operation,
        )


def test_archives_over_ssh_and_rest_are_repository_downloads() -> None:
    """`git archive --remote` and the REST archive download become repo.archived."""
    ssh = _end("o*R1", _ssh("git-upload-archive", "/proj/my-repo.git"), "", proto="ssh")
    rest = _end(
        "o*R2",
        _http("GET", "/rest/api/latest/projects/PROJ/repos/my-repo/archive?format=zip"),
        "",
    )
    not_a_download = _end(
        "o*R3", _http("POST", "/rest/api/1.0/projects/PROJ/repos/my-repo/archive"), ""
    )

    events = [
        normalize_access_line(line, instance="i", timezone=UTC_ZONE)
        for line in (ssh, rest, not_a_download)
    ]

    assert events[2] is None
    for event, protocol in zip(events[:2], ("ssh", "https"), strict=True):
        assert event is not None
        assert event.action == "repo.archived"
        assert event.target_names("REPOSITORY") == ["PROJ/my-repo"]
        assert event.context["git"]["operation"] == "archive"
        assert event.context["git"]["protocol"] == protocol


def test_labels_holding_the_separator_are_kept_whole() -> None:
    """An SSH key label with " | " in it does not break the field layout."""
    ssh = _ssh("git-upload-pack", "/proj/my-repo.git")
    labels = "clone, ssh:user_key_label:laptop | work | old"
    line = _end("o*P1", ssh, labels, proto="ssh", details=SSH_UA, status="0")

    event = normalize_access_line(line, instance="i", timezone=UTC_ZONE)

    assert event is not None
    assert event.action == "repo.cloned"
    assert event.user_agent == SSH_UA.strip('"')
    git = event.context["git"]
    assert git["labels"] == ["clone", "ssh:user_key_label:laptop | work | old"]
    assert (git["bytes_written"], git["duration_ms"]) == (5242880, 1834)


def test_outcomes_and_anonymous_actor() -> None:
    """HTTP non-2xx and SSH non-zero exits fail; '-' is an anonymous actor."""
    http = _end("o*F1", UPLOAD, "clone", status="401", user="-")
    ssh_ok = _end("o*F2", _ssh("git-upload-pack", "/p/r.git"), "clone", proto="ssh")
    ssh_ok = ssh_ok.replace(" | 200 | ", " | 0 | ")
    ssh_bad = ssh_ok.replace(" | 0 | ", " | 128 | ")

    failed = normalize_access_line(http, instance="i", timezone=UTC_ZONE)
    ok = normalize_access_line(ssh_ok, instance="i", timezone=UTC_ZONE)
    bad = normalize_access_line(ssh_bad, instance="i", timezone=UTC_ZONE)

    assert failed is not None and failed.outcome == "failure"
    assert failed.actor.kind == "anonymous" and failed.actor.name is None
    assert ok is not None and ok.outcome == "success"
    assert bad is not None and bad.outcome == "failure"


def test_refs_and_start_lines_are_not_events_by_default() -> None:
    """Ref advertisements need include_refs; start lines never are events."""
    refs = _end("o*R1", REFS, "refs")

    assert normalize_access_line(refs, instance="i", timezone=UTC_ZONE) is None
    assert (
        normalize_access_line(_line("i*R1", UPLOAD), instance="i", timezone=UTC_ZONE)
        is None
    )
    kept = normalize_access_line(
        refs, instance="i", timezone=UTC_ZONE, include_refs=True
    )
    assert kept is not None and kept.context["git"]["operation"] == "refs"


@pytest.mark.parametrize(
    ("zone", "local", "expected"),
    [
        (
            "Europe/Berlin",
            "2026-01-15 12:00:00,000",
            datetime(2026, 1, 15, 11, tzinfo=UTC),
        ),
        (
            "Europe/Berlin",
            "2026-07-15 12:00:00,000",
            datetime(2026, 7, 15, 10, tzinfo=UTC),
        ),
        (
            "America/New_York",
            "2026-07-15 23:30:00,500",
            datetime(2026, 7, 16, 3, 30, 0, 500000, tzinfo=UTC),
        ),
        ("UTC", "2026-07-15 12:00:00,000", datetime(2026, 7, 15, 12, tzinfo=UTC)),
    ],
)
def test_timezone_conversion(zone: str, local: str, expected: datetime) -> None:
    """The zone-less log time is read in the configured zone and stored as UTC."""
    line = _end("o*T1", UPLOAD, "clone", ts=local)

    event = normalize_access_line(line, instance="i", timezone=ZoneInfo(zone))

    assert event is not None
    assert event.time == expected


def test_id_is_stable_and_distinct() -> None:
    """The same line gives the same id; another request gives another."""
    first = normalize_access_line(
        _end("o*I1", UPLOAD, "clone"), instance="i", timezone=UTC_ZONE
    )
    again = normalize_access_line(
        _end("o*I1", UPLOAD, "clone"), instance="i", timezone=UTC_ZONE
    )
    other = normalize_access_line(
        _end("o*I2", UPLOAD, "clone"), instance="i", timezone=UTC_ZONE
    )

    assert first is not None and again is not None and other is not None
    assert first.id == again.id != other.id


# The source


def _source(
    tmp_path: Path, metrics: Metrics, **settings: Any
) -> tuple[AccessLogSource, StateStore]:
    store = StateStore.in_dir(tmp_path / "state")
    runtime = Runtime(state_dir=tmp_path / "state", store=store, metrics=metrics)
    values = {
        "kind": "dc_access_log",
        "name": "access",
        "path": str(tmp_path / "atlassian-bitbucket-access*.log"),
        "instance": "bb-prod",
    }
    values.update(settings)
    return AccessLogSource(AccessLogSettings.model_validate(values), runtime), store


async def _collect(
    source: AccessLogSource, checkpoint: Any = None
) -> list[SourceBatch]:
    return [b async for b in source.batches(checkpoint, follow=False)]


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "atlassian-bitbucket-access.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_settings_registered_and_validated() -> None:
    """The kind is registered; an unknown zone is a settings error."""
    plugin = SOURCES.get("dc_access_log", "sources[0].kind")

    assert plugin.settings is AccessLogSettings
    with pytest.raises(ValidationError, match="unknown time zone"):
        AccessLogSettings.model_validate(
            {"kind": "dc_access_log", "name": "a", "timezone": "Mars/Olympus"}
        )


async def test_source_pairs_skips_and_rejects(tmp_path: Path, metrics: Metrics) -> None:
    """A realistic log: git ends become events, the rest is skipped or rejected."""
    rest = _http("GET", "/rest/api/1.0/projects")
    ssh_push = _ssh("git-receive-pack", "/ops/infra.git")
    lines = [
        _line("i*K1", REFS),
        _end("o*K1", REFS, "refs"),
        _line("i*K2", UPLOAD),
        _line("i*K3", rest),
        _end("o*K3", rest, "-"),
        _end("o*K2", UPLOAD, "clone"),
        _line("i*K4", ssh_push, proto="ssh", details=SSH_UA),
        "this is not an access log line",
        _end("o*K4", ssh_push, "push", proto="ssh", details=SSH_UA, status="0"),
        _end("o*K5", UPLOAD, "fetch"),
    ]
    _write(tmp_path, lines)
    source, store = _source(tmp_path, metrics)

    with capture_logs() as logs:
        batches = await _collect(source)
    store.close()
    events = [e for b in batches for e in b.events]

    assert [e.action for e in events] == ["repo.cloned", "repo.pushed", "repo.fetched"]
    assert events[0].raw["start_line"] == lines[2]
    assert events[1].raw["start_line"] == lines[6]
    assert events[2].raw["start_line"] is None
    assert events[1].target_names("REPOSITORY") == ["OPS/infra"]
    assert sum(b.rejected for b in batches) == 1
    rejected = next(e for e in logs if e["event"] == "source.record_rejected")
    assert (rejected["line"], rejected["reason"]) == (8, "invalid_line")
    skipped = "bbaudit_access_log_lines_skipped_total"
    assert _sample(metrics, skipped, {"source": "access", "reason": "not_git"}) == 1
    assert _sample(metrics, skipped, {"source": "access", "reason": "refs"}) == 1
    assert batches[-1].caught_up


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9, 10.1.1.1", "203.0.113.9"),
        # A forged X-Forwarded-For only adds hops on the left.
        ("6.6.6.6, 203.0.113.9, 10.1.1.1", "203.0.113.9"),
        ("6.6.6.6,203.0.113.9,10.1.1.2,10.1.1.1", "203.0.113.9"),
        ("10.1.1.2, 10.1.1.1", "10.1.1.2"),
        ("2001:db8::7, fd00::1", "2001:db8::7"),
    ],
)
def test_trusted_proxies_pick_the_hop_before_them(chain: str, client: str) -> None:
    """The client is the last address of the chain that is not a trusted proxy."""
    trusted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))

    assert client_address(chain, trusted) == client


def test_without_trusted_proxies_the_first_hop_is_the_client() -> None:
    """With no proxies configured the first address is taken, as before."""
    assert client_address("6.6.6.6, 203.0.113.9, 10.1.1.1") == "6.6.6.6"
    assert client_address("-") is None


async def test_source_uses_its_trusted_proxies(
    tmp_path: Path, metrics: Metrics
) -> None:
    """trusted_proxies in the config decide the event's source address."""
    chain = "6.6.6.6, 198.51.100.4, 10.9.0.1"
    _write(
        tmp_path,
        [_line("i*X1", UPLOAD, ip=chain), _end("o*X1", UPLOAD, "clone", ip=chain)],
    )
    source, store = _source(tmp_path, metrics, trusted_proxies=["10.9.0.0/16"])

    batches = await _collect(source)
    store.close()

    assert [e.source_ip for b in batches for e in b.events] == ["198.51.100.4"]


def test_trusted_proxies_must_be_networks() -> None:
    """A proxy entry that is not a CIDR is a settings error."""
    with pytest.raises(ValidationError, match="trusted_proxies"):
        AccessLogSettings.model_validate(
            {"kind": "dc_access_log", "name": "a", "trusted_proxies": ["proxy-1"]}
        )


async def test_unmatched_starts_are_bounded(tmp_path: Path, metrics: Metrics) -> None:
    """Start lines without an end are evicted beyond the limit and counted."""
    lines = [_line(f"i*U{n}", UPLOAD) for n in range(5)]
    lines.append(_end("o*U0", UPLOAD, "clone"))
    lines.append(_end("o*U4", UPLOAD, "clone"))
    _write(tmp_path, lines)
    source, store = _source(tmp_path, metrics, max_pending_starts=2)

    batches = await _collect(source)
    store.close()
    events = [e for b in batches for e in b.events]

    assert [e.raw["start_line"] for e in events] == [None, lines[4]]
    evicted = "bbaudit_access_log_starts_evicted_total"
    assert _sample(metrics, evicted, {"source": "access"}) == 3
    assert (
        _sample(metrics, "bbaudit_access_log_pending_starts", {"source": "access"}) == 1
    )


async def test_expired_starts_are_evicted(tmp_path: Path, metrics: Metrics) -> None:
    """Start lines older than start_ttl are dropped."""
    _write(tmp_path, [_line("i*E1", UPLOAD)])
    source, store = _source(tmp_path, metrics, start_ttl=0)

    await _collect(source)
    store.close()

    evicted = "bbaudit_access_log_starts_evicted_total"
    assert _sample(metrics, evicted, {"source": "access"}) == 1


async def test_restart_from_checkpoint_no_loss_no_dup(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Restarting from each batch's checkpoint yields every git event once."""
    lines = []
    for n in range(12):
        lines += [_line(f"i*S{n}", UPLOAD), _end(f"o*S{n}", UPLOAD, "clone")]
    _write(tmp_path, lines)
    source, store = _source(tmp_path, metrics, batch_size=5)
    ids: list[str] = []
    checkpoint: Any = None

    for _ in range(20):
        batches = source.batches(checkpoint, follow=False)
        batch = await anext(batches)
        await batches.aclose()
        ids += [e.id for e in batch.events]
        checkpoint = batch.checkpoint
        if batch.caught_up:
            break
    store.close()

    assert len(ids) == 12
    assert len(set(ids)) == 12


async def test_simulator_files_round_trip(tmp_path: Path, metrics: Metrics) -> None:
    """Every git operation the simulator writes comes back as one audit event."""
    from collector.simulator import build_world

    end = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    world = build_world(5, users=25, days=1.0, end=end)
    world.write_files(tmp_path, max_file_bytes=64 * 1024)
    source, store = _source(
        tmp_path,
        metrics,
        path=str(tmp_path / "log" / "atlassian-bitbucket-access*.log"),
    )

    batches = await _collect(source)
    store.close()
    events = [e for b in batches for e in b.events]

    expected = sorted((op.operation, op.username) for op in world.git_ops)
    got = sorted((e.context["git"]["operation"], e.actor.name) for e in events)
    assert got == expected
    assert sum(b.rejected for b in batches) == 0
    assert all(e.raw["start_line"] is not None for e in events)

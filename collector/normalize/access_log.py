"""Data Center access-log lines (``atlassian-bitbucket-access*.log``) to git events.

Each request writes two lines: one when it starts (request id ``i…``) and one
when it ends (``o…``); the part after the letter pairs them. Fields are
separated by ``" | "``; a line usually ends with ``" |"``::

    ip | protocol | request id | user | yyyy-MM-dd HH:mm:ss,SSS | action | details |
    status | bytes read | bytes written | labels | duration ms | session |

``-`` stands for an empty field. The start line carries ``-`` from status on;
older versions drop fields (an SSH end line without the duration, a start line
with only two placeholders). The details field holds what the client sent
(``"<referrer>" "<user agent>"`` over HTTP, the SSH client version over SSH),
so it may contain anything, ``" | "`` included. The fields after it are written
by Bitbucket, so an end line is split from the right: whatever is left between
the action and the status is the details field. Sources: the Atlassian KB "How to
read the Bitbucket Server log formats" and the ``juretta/stash-log-parser``
notes in ``shared/reference/bitbucket-sources.md`` §4.

The timestamp has no zone; the caller says which zone the server logs in.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal
from urllib.parse import unquote

from collector.model import Actor, ActorKind, AuditEvent, Outcome, Target

GitOperationKind = Literal["clone", "shallow_clone", "fetch", "push", "refs", "archive"]

_SEPARATOR = " | "
_HEAD_FIELDS = 6
_TIME = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})[,.]([0-9]{3})$"
)
_MAX_RAW_CHARS = 4096
_NUMBER = re.compile(r"^(?:-|[0-9]+)$")
_STATUS = re.compile(r"^(?:-|[0-9]{1,3})$")
_HTTP_GIT = re.compile(
    r"(?:^|/)scm/(?P<project>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?"
    r"/(?P<endpoint>info/refs|git-upload-pack|git-receive-pack)$"
)
# Repository content as a zip or tar: `git archive --remote` over SSH, or the
# REST archive endpoint (the "Download" button) over HTTP.
_HTTP_ARCHIVE = re.compile(
    r"(?:^|/)rest/api/(?:latest|1\.0)/projects/(?P<project>[^/]+)"
    r"/repos/(?P<repo>[^/]+)/archive$"
)
_SSH_GIT = re.compile(
    r"(?P<service>git-upload-pack|git-receive-pack|git-upload-archive)\s+'/?(?:scm/)?"
    r"(?P<project>[^/']+)/(?P<repo>[^/']+?)(?:\.git)?/?'"
)
_QUOTED_PAIR = re.compile(r'^"(?P<referrer>[^"]*)" "(?P<agent>.*)"$')

ACTIONS: dict[str, str] = {
    "clone": "repo.cloned",
    "shallow_clone": "repo.cloned",
    "fetch": "repo.fetched",
    "push": "repo.pushed",
    "archive": "repo.archived",
    # Not in the action vocabulary: only emitted with include_refs.
    "refs": "repo.refs_advertised",
}


@dataclass(frozen=True, slots=True)
class AccessLine:
    """One parsed access-log line; ``None`` where the log had ``-`` or nothing."""

    client_ip: str | None
    protocol: str | None
    request_id: str
    phase: Literal["start", "end"]
    user: str | None
    timestamp: str
    action: str
    details: str | None
    status: int | None
    bytes_read: int | None
    bytes_written: int | None
    labels: tuple[str, ...]
    duration_ms: int | None
    session: str | None
    line: str

    @property
    def request_key(self) -> str:
        """The id without its ``i``/``o`` letter: the same on both lines."""
        return self.request_id[1:]


@dataclass(frozen=True, slots=True)
class GitOperation:
    """What a git request did, and to which repository."""

    operation: GitOperationKind
    service: str
    project: str
    repository: str
    transport: Literal["http", "ssh"]

    @property
    def repository_name(self) -> str:
        """``PROJECT/repo``, the name of the REPOSITORY target."""
        return f"{self.project}/{self.repository}"


ProxyNetworks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_access_line(line: str, trusted_proxies: ProxyNetworks = ()) -> AccessLine:
    """Split one access-log line into fields. Raises ``ValueError``.

    ``trusted_proxies`` picks the client out of a forwarded-for chain (see
    ``client_address``).
    """
    text = line.rstrip("\r\n").removesuffix(" |").removesuffix("|").rstrip()
    fields = text.split(_SEPARATOR)
    if len(fields) < _HEAD_FIELDS:
        raise ValueError(f"expected at least {_HEAD_FIELDS} fields, got {len(fields)}")

    ip, protocol, request_id, user, timestamp, action = fields[:_HEAD_FIELDS]
    if len(request_id) < 2 or request_id[0] not in "io":
        raise ValueError("request id does not start with 'i' or 'o'")
    phase: Literal["start", "end"] = "start" if request_id[0] == "i" else "end"
    _parse_naive_time(timestamp)

    rest = fields[_HEAD_FIELDS:]
    details, tail = _split_details(rest) if phase == "end" else _start_details(rest)
    return AccessLine(
        client_ip=client_address(ip, trusted_proxies),
        protocol=_blank(protocol.lower()),
        request_id=request_id,
        phase=phase,
        user=_blank(user),
        timestamp=timestamp,
        action=action.strip(),
        details=_blank(details),
        status=_int(tail[0]),
        bytes_read=_int(tail[1]),
        bytes_written=_int(tail[2]),
        labels=_labels(tail[3]),
        duration_ms=_int(tail[4]),
        session=_blank(tail[5]),
        line=line.rstrip("\r\n"),
    )


def detect_git_operation(record: AccessLine) -> GitOperation | None:
    """The git operation of a request, or ``None`` for REST, UI and other requests.

    Labels decide clone, shallow clone and fetch; without them an HTTP
    ``git-upload-pack`` counts as a fetch (a pack was requested) and an SSH one
    as a ref advertisement (``git ls-remote``), as the stash-log-parser does.
    """
    if record.action.startswith("SSH"):
        return _ssh_operation(record)
    return _http_operation(record)


def to_audit_event(
    record: AccessLine,
    operation: GitOperation,
    *,
    instance: str,
    timezone: tzinfo,
    start_line: str | None = None,
) -> AuditEvent:
    """Build the audit event of one completed git request (its end line)."""
    time = _parse_naive_time(record.timestamp).replace(tzinfo=timezone).astimezone(UTC)
    git_context = {
        "operation": operation.operation,
        "protocol": record.protocol,
        "bytes_read": record.bytes_read,
        "bytes_written": record.bytes_written,
        "duration_ms": record.duration_ms,
        "status": record.status,
        "labels": list(record.labels),
    }
    return AuditEvent(
        id=access_event_id(instance, record, operation),
        time=time,
        platform="dc",
        instance=instance,
        source_kind="dc_access_log",
        action=ACTIONS[operation.operation],
        category="repository",
        outcome=_outcome(record),
        raw_action=record.action[:512],
        actor=_actor(record.user),
        targets=(Target(type="REPOSITORY", name=operation.repository_name),),
        source_ip=record.client_ip,
        user_agent=_user_agent(record.details),
        attributes={"request_id": record.request_key, "service": operation.service},
        raw={
            "line": record.line[:_MAX_RAW_CHARS],
            "start_line": start_line[:_MAX_RAW_CHARS] if start_line else None,
        },
        context={"git": git_context},
    )


def normalize_access_line(
    line: str,
    *,
    instance: str,
    timezone: tzinfo,
    start_line: str | None = None,
    include_refs: bool = False,
    trusted_proxies: ProxyNetworks = (),
) -> AuditEvent | None:
    """One end line -> its audit event; ``None`` for anything that is not one.

    Start lines, non-git requests and (unless ``include_refs``) ref
    advertisements give ``None``. Raises ``ValueError`` for a malformed line.
    """
    record = parse_access_line(line, trusted_proxies)
    if record.phase != "end":
        return None
    operation = detect_git_operation(record)
    if operation is None or (operation.operation == "refs" and not include_refs):
        return None
    return to_audit_event(
        record, operation, instance=instance, timezone=timezone, start_line=start_line
    )


def access_event_id(instance: str, record: AccessLine, operation: GitOperation) -> str:
    """A stable id: the same end line always hashes to the same id."""
    parts = [
        instance,
        record.request_key,
        record.timestamp,
        record.user or "-",
        operation.repository_name,
        operation.service,
    ]
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"dca-{digest[:32]}"


# Field splitting


def _split_details(rest: list[str]) -> tuple[str | None, list[str | None]]:
    """Details and the six fields after it, for an end line.

    Tried in order: the full tail (status … session), the tail without its
    duration (older SSH lines), then a line cut short, read left to right.
    """
    for size, has_duration in ((6, True), (5, False)):
        if len(rest) > size and _is_tail(rest[-size:], has_duration):
            tail: list[str | None] = list(rest[-size:])
            if not has_duration:
                tail.insert(4, None)
            return _SEPARATOR.join(rest[:-size]), tail

    split = _split_around_labels(rest)
    if split is not None:
        return split

    if rest and not _STATUS.match(rest[0].strip()):
        details, values = rest[0], rest[1:]
    else:
        details, values = None, rest
    if not _is_partial_tail(values):
        raise ValueError("cannot find status, bytes and duration fields")
    padded: list[str | None] = [*values, *([None] * (6 - len(values)))]
    return details, padded


def _split_around_labels(
    rest: list[str],
) -> tuple[str | None, list[str | None]] | None:
    """The full tail when the labels field itself holds " | ".

    Labels carry user-chosen text (an SSH key's label), so they can contain
    the separator. The fields around them have fixed shapes: status and two
    byte counts before, duration and session after. The leftmost status that
    fits starts the tail; what lies between the byte counts and the duration
    is the labels field, pipes included.
    """
    if len(rest) < 7 or not _NUMBER.match(rest[-2].strip()):
        return None
    for start in range(1, len(rest) - 5):
        status, read, written = (f.strip() for f in rest[start : start + 3])
        if _STATUS.match(status) and _NUMBER.match(read) and _NUMBER.match(written):
            labels = _SEPARATOR.join(rest[start + 3 : -2])
            tail: list[str | None] = [*rest[start : start + 3], labels, *rest[-2:]]
            return _SEPARATOR.join(rest[:start]), tail
    return None


def _is_tail(fields: list[str], has_duration: bool) -> bool:
    status, read, written, labels = (f.strip() for f in fields[:4])
    if not (_STATUS.match(status) and _NUMBER.match(read) and _NUMBER.match(written)):
        return False
    if has_duration:
        return bool(_NUMBER.match(fields[4].strip()))
    # Without a duration the last field is the session id, never a bare number.
    return not fields[4].strip().isdigit() and not labels.isdigit()


def _is_partial_tail(values: list[str]) -> bool:
    patterns = (_STATUS, _NUMBER, _NUMBER, None, _NUMBER, None)
    if len(values) > len(patterns):
        return False
    checks = zip(patterns, values, strict=False)
    return all(p is None or p.match(v.strip()) for p, v in checks)


def _start_details(rest: list[str]) -> tuple[str | None, list[str | None]]:
    """Details of a start line: everything before the trailing placeholders."""
    end = len(rest)
    if end > 1:
        end -= 1  # the session id
    while end > 1 and rest[end - 1].strip() == "-":
        end -= 1
    session = rest[-1] if len(rest) > 1 else None
    details = _SEPARATOR.join(rest[:end]) if rest else None
    return details, [None, None, None, None, None, session]


# Git operations


def _http_operation(record: AccessLine) -> GitOperation | None:
    parts = record.action.strip('"').split(" ")
    if len(parts) < 2:
        return None
    method, target = parts[0].upper(), parts[1]
    path, _, query = target.partition("?")
    archive = _HTTP_ARCHIVE.search(unquote(path))
    if archive is not None:
        if method != "GET":
            return None
        return _operation(
            "archive", "archive", archive["project"], archive["repo"], "http"
        )
    match = _HTTP_GIT.search(unquote(path))
    if match is None:
        return None

    endpoint = match["endpoint"]
    if endpoint == "info/refs":
        service = (
            "git-receive-pack" if "git-receive-pack" in query else "git-upload-pack"
        )
        kind: GitOperationKind | None = "refs" if method == "GET" else None
    elif endpoint == "git-receive-pack":
        service, kind = endpoint, ("push" if method == "POST" else None)
    else:
        service = endpoint
        kind = (
            _upload_kind(record.labels, default="fetch") if method == "POST" else None
        )
    if kind is None:
        return None
    return _operation(kind, service, match["project"], match["repo"], "http")


def _ssh_operation(record: AccessLine) -> GitOperation | None:
    match = _SSH_GIT.search(record.action)
    if match is None:
        return None
    service = match["service"]
    if service == "git-upload-archive":
        kind: GitOperationKind = "archive"
    elif service == "git-receive-pack":
        labels = record.labels
        kind = "refs" if "refs" in labels and "push" not in labels else "push"
    else:
        kind = _upload_kind(record.labels, default="refs")
    return _operation(kind, service, match["project"], match["repo"], "ssh")


def _upload_kind(
    labels: tuple[str, ...], *, default: GitOperationKind
) -> GitOperationKind:
    shallow = "shallow clone" in labels or "shallow" in labels
    if "clone" in labels or "shallow clone" in labels:
        return "shallow_clone" if shallow else "clone"
    if "fetch" in labels:
        return "fetch"
    if "refs" in labels:
        return "refs"
    return default


def _operation(
    kind: GitOperationKind,
    service: str,
    project: str,
    repo: str,
    transport: Literal["http", "ssh"],
) -> GitOperation:
    return GitOperation(kind, service, project.upper(), repo, transport)


# Values


def _outcome(record: AccessLine) -> Outcome:
    if record.status is None:
        return "unknown"
    if record.protocol == "ssh":
        # Over SSH the status column holds the git process exit code.
        return "success" if record.status == 0 else "failure"
    return "success" if 200 <= record.status < 300 else "failure"


def _actor(user: str | None) -> Actor:
    if user is None:
        return Actor(kind="anonymous")
    kind: ActorKind = "bot" if user.startswith("access-token-user/") else "unknown"
    return Actor(name=user, kind=kind)


def _user_agent(details: str | None) -> str | None:
    """The client's user agent: the second quoted string over HTTP, else unquoted."""
    if details is None:
        return None
    pair = _QUOTED_PAIR.match(details)
    if pair is not None:
        return pair["agent"] or None
    if len(details) >= 2 and details[0] == details[-1] == '"':
        return details[1:-1] or None
    return details


def _parse_naive_time(text: str) -> datetime:
    # Slicing a fixed layout is several times faster than strptime.
    match = _TIME.match(text.strip())
    if match is None:
        raise ValueError(f"timestamp {text[:40]!r} is not yyyy-MM-dd HH:mm:ss,SSS")
    year, month, day, hour, minute, second, millis = map(int, match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, millis * 1000)
    except ValueError as exc:
        raise ValueError(f"timestamp {text[:40]!r} is not a valid time") from exc


def client_address(value: str, trusted_proxies: ProxyNetworks = ()) -> str | None:
    """The client of a possibly forwarded-for chain ``"client, proxy, ..."``.

    Without trusted proxies: the first address, as Bitbucket's own docs read
    the chain. With them: the chain is walked from the right (the hop nearest
    Bitbucket) past every trusted proxy, and the first address that is not one
    is the client; a client that forges ``X-Forwarded-For`` only adds entries
    to the left of it, so it cannot choose the address we report.
    """
    hops = [hop.strip() for hop in value.split(",")]
    if not trusted_proxies:
        return _blank(hops[0])
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted_proxies):
            return _blank(hop)
    # Every hop is a trusted proxy: the request came from inside.
    return _blank(hops[0])


def _is_trusted(hop: str, trusted_proxies: ProxyNetworks) -> bool:
    try:
        address = ipaddress.ip_address(hop)
    except ValueError:
        return False
    return any(address in network for network in trusted_proxies)


def _labels(value: str | None) -> tuple[str, ...]:
    if value is None or value.strip() in ("", "-"):
        return ()
    return tuple(label.strip() for label in value.split(",") if label.strip())


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    # Byte counts and durations fit in 63 bits; a longer number is garbage,
    # and would not serialize in any sink (orjson refuses > 64-bit integers).
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def _blank(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    return None if text in ("", "-") else text

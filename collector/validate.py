"""``bbaudit validate --connect``: can this process reach what its config names?

Each source, enricher and sink gets one light check, chosen from the fields its
settings have (so new plugin kinds are covered without code here):

- ``base_url``/``url``: one unauthenticated HTTP GET with the configured TLS
  settings; any answer below 500 counts as reachable (credentials are not
  checked: that would need a real API call with side effects in audit logs).
- ``bootstrap_servers`` (Kafka): a TCP connect to each; one is enough.
- ``host`` + ``port`` (syslog): a TCP connect, a TLS handshake for ``tls``,
  a name lookup for ``udp`` (UDP cannot be checked without sending).
- file paths (``path``, ``city_db``, ...): the file or its directory exists
  and is readable; a sink's directory is writable.

No detail ever holds a secret: URLs lose userinfo and query, and every message
passes ``scrub_text``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from collector.config import AppSettings
from collector.secrets import scrub_text

DEFAULT_TIMEOUT_S = 5.0
MAX_DETAIL_CHARS = 200
# Where each kind answers an unauthenticated GET; the base URL otherwise.
_HEALTH_PATHS = {"dc_rest": "/status", "splunk_hec": "/services/collector/health"}
_READ_PATH_FIELDS = ("path", "city_db", "asn_db")


@dataclass(frozen=True, slots=True)
class ConnectivityResult:
    """One check: ``component`` is ``source:<name>``, ``sink:<name>`` and so on."""

    component: str
    ok: bool
    detail: str


Check = Callable[[], Awaitable[tuple[bool, str]]]


async def check_connectivity(
    settings: AppSettings, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[ConnectivityResult]:
    """Check every configured component concurrently; results in config order."""
    checks = list(_plan(settings, timeout_s))
    outcomes = await asyncio.gather(
        *(_bounded(check, timeout_s) for _, check in checks)
    )

    return [
        ConnectivityResult(component, ok, _clean(detail))
        for (component, _), (ok, detail) in zip(checks, outcomes, strict=True)
    ]


def format_validation_report(results: Sequence[ConnectivityResult]) -> str:
    """A plain-text table of the results and a one-line summary."""
    if not results:
        return "nothing to check"
    width = max(len(r.component) for r in results)
    lines = [
        f"  {'ok  ' if r.ok else 'FAIL'}  {r.component:<{width}}  {r.detail}"
        for r in results
    ]
    reached = sum(r.ok for r in results)
    lines.append(f"{reached} of {len(results)} checks passed")

    return "\n".join(lines)


def _plan(settings: AppSettings, timeout_s: float) -> Iterable[tuple[str, Check]]:
    yield "state_dir", _writable_dir_check(Path(settings.state_dir))
    for role, items in (
        ("source", settings.sources),
        ("enricher", settings.enrichers),
        ("sink", settings.sinks),
    ):
        for item in items:
            name = f"{role}:{getattr(item, 'name', '?')}"
            for suffix, check in _checks_for(role, item, timeout_s):
                yield name + suffix, check


def _checks_for(role: str, item: Any, timeout_s: float) -> list[tuple[str, Check]]:
    kind = getattr(item, "kind", "")
    url = getattr(item, "base_url", None) or getattr(item, "url", None)
    if isinstance(url, str):
        target = url.rstrip("/") + _HEALTH_PATHS.get(kind, "")
        return [("", lambda: _http_check(target, item, timeout_s))]

    servers = getattr(item, "bootstrap_servers", None)
    if servers:
        return [("", lambda: _bootstrap_check(servers, timeout_s))]

    host, port = getattr(item, "host", None), getattr(item, "port", None)
    if isinstance(host, str) and isinstance(port, int) and role == "sink":
        return [("", lambda: _socket_check(host, port, item, timeout_s))]

    return _path_checks(role, item) or [("", _nothing_to_check)]


def _path_checks(role: str, item: Any) -> list[tuple[str, Check]]:
    checks: list[tuple[str, Check]] = []
    for field in _READ_PATH_FIELDS:
        value = getattr(item, field, None)
        if value is None:
            continue
        path = Path(value)
        suffix = "" if field == "path" else f".{field}"
        if role == "sink":
            checks.append((suffix, _writable_dir_check(path.parent)))
        else:
            checks.append((suffix, _readable_check(str(value))))
    return checks


async def _bounded(check: Check, timeout_s: float) -> tuple[bool, str]:
    try:
        return await asyncio.wait_for(check(), timeout_s + 1.0)
    except TimeoutError:
        return False, f"no answer within {timeout_s:g}s"
    except Exception as exc:  # a check must report, never crash validate
        return False, _describe(exc)


async def _nothing_to_check() -> tuple[bool, str]:
    return True, "nothing to reach"


async def _http_check(url: str, item: Any, timeout_s: float) -> tuple[bool, str]:
    shown = _safe_url(url)
    async with httpx.AsyncClient(
        verify=_tls_context(item),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
    ) as client:
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            return False, f"{shown}: {_describe(exc)}"

    status = response.status_code
    if status >= 500:
        return False, f"{shown}: HTTP {status}"
    note = " (reachable; credentials not checked)" if status in (401, 403) else ""

    return True, f"{shown}: HTTP {status}{note}"


async def _bootstrap_check(servers: Any, timeout_s: float) -> tuple[bool, str]:
    entries = servers.split(",") if isinstance(servers, str) else list(servers)
    failures = []
    for entry in entries:
        host, _, port = str(entry).strip().rpartition(":")
        try:
            await _tcp_connect(host.strip("[]"), int(port), None, timeout_s)
        except (OSError, ValueError, TimeoutError) as exc:
            failures.append(f"{entry}: {_describe(exc)}")
            continue
        return True, f"bootstrap {entry}: TCP connect ok"

    return False, "; ".join(failures) or "no bootstrap servers"


async def _socket_check(
    host: str, port: int, item: Any, timeout_s: float
) -> tuple[bool, str]:
    transport = getattr(item, "transport", "tcp")
    where = f"{transport} {host}:{port}"
    try:
        if transport == "udp":
            await asyncio.get_running_loop().getaddrinfo(host, port)
            return True, f"{where}: name resolves (UDP delivery cannot be checked)"
        context = _tls_context(item) if transport == "tls" else None
        server_name = getattr(item, "server_name", None) or host
        await _tcp_connect(host, port, context, timeout_s, server_name)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return False, f"{where}: {_describe(exc)}"

    return True, f"{where}: {'TLS handshake' if context else 'TCP connect'} ok"


async def _tcp_connect(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    timeout_s: float,
    server_name: str | None = None,
) -> None:
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=context, server_hostname=server_name if context else None
        ),
        timeout_s,
    )
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout_s)


def _readable(pattern: str) -> tuple[bool, str]:
    matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
    readable = [m for m in matches if os.path.isfile(m) and os.access(m, os.R_OK)]
    if readable:
        return True, f"{pattern}: {len(readable)} readable file(s)"
    parent = Path(pattern).parent
    if glob.has_magic(pattern) and parent.is_dir() and os.access(parent, os.R_OK):
        return True, f"{pattern}: no file yet, directory readable"

    return False, f"{pattern}: not found or not readable"


def _writable(directory: Path) -> tuple[bool, str]:
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        state = "writable" if existing == directory else f"creatable in {existing}"
        return True, f"{directory}: {state}"

    return False, f"{directory}: not writable"


def _readable_check(pattern: str) -> Check:
    # File system calls can block on network mounts: keep them off the loop.
    return lambda: asyncio.to_thread(_readable, pattern)


def _writable_dir_check(directory: Path) -> Check:
    return lambda: asyncio.to_thread(_writable, directory)


def _tls_context(item: Any) -> ssl.SSLContext:
    ca_file = getattr(item, "ca_file", None)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not getattr(item, "verify", getattr(item, "verify_tls", True)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = getattr(item, "client_cert", None)
    if cert:
        context.load_cert_chain(str(cert), getattr(item, "client_key", None))

    return context


def _safe_url(url: str) -> str:
    """The URL without userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable url>"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.gaierror):
        text = f"name lookup failed ({exc.strerror})"
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _clean(detail: str) -> str:
    cleaned = scrub_text(detail.replace("\n", " "))
    if len(cleaned) > MAX_DETAIL_CHARS:
        cleaned = cleaned[: MAX_DETAIL_CHARS - 3] + "..."
    return cleaned


__all__ = ["ConnectivityResult", "check_connectivity", "format_validation_report"]

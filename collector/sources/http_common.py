"""What the HTTP polling sources share: the client, retry timing, rate limiting
and the guarded read of one JSON page.

Every guard here exists because a server (or a proxy in front of it) can send
something that would otherwise stall or sink the collector: a body without an
end, a body of 50 MB, JSON nested 10,000 deep, bytes that are not UTF-8. Each
becomes a ``PageError`` with a short ``reason`` that the source logs and counts.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from collector.errors import BitbucketAPIError
from collector.metrics import Metrics

DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0
T = TypeVar("T")

# A server asking for more than an hour is treated as asking for an hour:
# the poll must come back eventually and say why it waited.
MAX_RETRY_AFTER_S = 3600.0


class Clock(Protocol):
    """Time as the sources see it; tests pass a fake one so backoff is instant."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class PageError(Exception):
    """A response could not be used as a page.

    ``reason`` is a bounded metric label (``too_large``, ``deadline``,
    ``malformed_json``, ``too_deep``, ``not_utf8``, ``http_5xx``, ...);
    ``retry_after`` is the server's requested wait in seconds, if it gave one.
    """

    def __init__(
        self, reason: str, detail: str, *, retry_after: float | None = None
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(f"{reason}: {detail}")


class AuthFailedError(BitbucketAPIError):
    """The server refused our credentials (401) or our rights (403)."""


def make_client(
    *,
    base_url: str,
    verify: bool = True,
    ca_file: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with TLS 1.2+ and verification on unless told.

    ``ca_file`` adds a private CA to the system ones. ``transport`` replaces the
    network (tests pass an ``httpx.MockTransport``). Redirects are not followed:
    an audit API that redirects is misconfigured, and following would carry the
    credentials to wherever it points.
    """
    return httpx.AsyncClient(
        base_url=base_url,
        verify=_ssl_context(verify, ca_file),
        timeout=httpx.Timeout(timeout_s),
        headers=dict(headers or {}),
        auth=auth,
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )


def _ssl_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(ca_file) if ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def backoff_delay(
    attempt: int,
    *,
    base_s: float = DEFAULT_BACKOFF_BASE_S,
    cap_s: float = DEFAULT_BACKOFF_CAP_S,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter backoff: uniform in [0, min(cap, base * 2**attempt)].

    ``attempt`` counts from 0. Full jitter spreads the retries of several
    collectors hitting one recovering server instead of bunching them.
    """
    ceiling = min(cap_s, base_s * (2.0 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or HTTP date.

    Returns ``None`` when absent or unreadable, and clamps to
    [0, ``MAX_RETRY_AFTER_S``].
    """
    if not value:
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, now)
    if seconds is None or seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


def _seconds_until(http_date: str, now: datetime) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - now).total_seconds()


class TokenBucket:
    """A client-side rate limit: ``rate`` tokens a second, at most ``burst`` saved.

    Keeps the collector under a server's published limit so it does not have to
    learn the limit from 429s.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Clock) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock.monotonic()

    async def acquire(self) -> float:
        """Take one token, waiting until there is one; returns seconds waited."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0

        wait = (1 - self._tokens) / self._rate
        await self._clock.sleep(wait)
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)
        return wait

    def _refill(self) -> None:
        stamp = self._clock.monotonic()
        elapsed = max(0.0, stamp - self._stamp)
        self._stamp = stamp
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One GET of a JSON page, with the limits that guard its read."""

    path: str
    params: Mapping[str, str | int]
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    deadline_s: float = 120.0


async def get_json_page(
    client: httpx.AsyncClient, request: PageRequest, clock: Clock
) -> Any:
    """GET one page and return its parsed JSON.

    Raises ``AuthFailedError`` on 401/403, ``BitbucketAPIError`` on other 4xx
    (not retriable), and ``PageError`` for everything worth retrying or skipping:
    429, 5xx, transport errors, a body over ``max_bytes``, a read that outlasts
    ``deadline_s`` in total, and a body that is not JSON we can accept.
    """
    try:
        async with asyncio.timeout(request.deadline_s):
            status, headers, body = await _read_capped(client, request)
    except TimeoutError:
        raise PageError(
            "deadline", f"no complete response within {request.deadline_s:g}s"
        ) from None
    except httpx.TimeoutException as exc:
        raise PageError("timeout", type(exc).__name__) from None
    except httpx.TransportError as exc:
        raise PageError("connection", type(exc).__name__) from None

    _raise_for_status(status, headers, clock)
    return parse_json(body)


async def _read_capped(
    client: httpx.AsyncClient, request: PageRequest
) -> tuple[int, httpx.Headers, bytes]:
    async with client.stream("GET", request.path, params=dict(request.params)) as resp:
        if resp.status_code >= 300:
            # Error bodies are not needed and may be huge; read none of them.
            return resp.status_code, resp.headers, b""
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > request.max_bytes:
            raise PageError("too_large", f"content-length {declared} bytes")

        chunks: list[bytes] = []
        size = 0
        # Decoded chunks are counted, so a compressed bomb meets the cap too.
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > request.max_bytes:
                raise PageError("too_large", f"body over {request.max_bytes} bytes")
            chunks.append(chunk)
        return resp.status_code, resp.headers, b"".join(chunks)


def _raise_for_status(status: int, headers: httpx.Headers, clock: Clock) -> None:
    if status < 300:
        return
    if status in (401, 403):
        raise AuthFailedError(f"HTTP {status}", status=status)
    if status == 429:
        wait = parse_retry_after(headers.get("retry-after"), clock.now())
        raise PageError("rate_limited", "HTTP 429", retry_after=wait)
    if status >= 500:
        wait = parse_retry_after(headers.get("retry-after"), clock.now())
        raise PageError("http_5xx", f"HTTP {status}", retry_after=wait)
    raise BitbucketAPIError(f"HTTP {status}", status=status)


def parse_json(body: bytes) -> Any:
    """Parse a page body, turning every way it can be bad into ``PageError``.

    orjson refuses nesting deeper than 1024 and invalid UTF-8 by itself; the
    ``RecursionError`` guard is for any later change of parser.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "depth" in message or "recursion" in message.lower():
            raise PageError("too_deep", "JSON nested too deeply") from None
        if "UTF-8" in message:
            raise PageError("not_utf8", "body is not valid UTF-8") from None
        raise PageError("malformed_json", message[:120]) from None
    except RecursionError:
        raise PageError("too_deep", "JSON nested too deeply") from None


ACCEPT_JSON = {"Accept": "application/json", "Accept-Encoding": "identity"}

FailureHook = Callable[[PageError, int, float | None], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often one page is tried and how long to wait in between."""

    attempts: int = 5
    base_s: float = DEFAULT_BACKOFF_BASE_S
    cap_s: float = DEFAULT_BACKOFF_CAP_S


async def get_json_with_retry(
    client: httpx.AsyncClient,
    request: PageRequest,
    *,
    clock: Clock,
    policy: RetryPolicy,
    on_failure: FailureHook,
    check: Callable[[Any], T],
    rng: random.Random | None = None,
) -> T:
    """``get_json_page`` tried up to ``policy.attempts`` times.

    Waits ``Retry-After`` when the server gave one, else full-jitter backoff.
    ``on_failure(error, attempt, delay)`` is called for every failed attempt
    (``delay`` is ``None`` on the last); the last ``PageError`` is re-raised.
    ``AuthFailedError`` and other ``BitbucketAPIError`` pass through untried.
    ``check(page)`` validates the parsed page's shape (raising ``PageError``)
    inside the retry; its result is returned.
    """
    attempt = 0
    while True:
        try:
            page = await get_json_page(client, request, clock)
            return check(page)
        except PageError as exc:
            if attempt + 1 >= policy.attempts:
                on_failure(exc, attempt, None)
                raise
            delay = exc.retry_after
            if delay is None:
                delay = backoff_delay(
                    attempt, base_s=policy.base_s, cap_s=policy.cap_s, rng=rng
                )
            on_failure(exc, attempt, delay)
            await clock.sleep(delay)
            attempt += 1


class PollMetrics:
    """The metrics every polling source keeps, bound to one source name."""

    def __init__(self, metrics: Metrics, source: str) -> None:
        self.source = source
        self.rejected = metrics.events_rejected
        self.filtered = metrics.events_filtered.labels(source)
        self.duration = metrics.histogram(
            "bbaudit_poll_duration_seconds",
            "Duration of one poll cycle of a source.",
            ["source"],
        ).labels(source)
        self.last_success = metrics.gauge(
            "bbaudit_last_poll_success_timestamp_seconds",
            "Unix time at which a source last completed a poll cycle.",
            ["source"],
        ).labels(source)
        self.page_errors = metrics.counter(
            "bbaudit_source_page_errors_total",
            "Failed page requests of a polling source, by reason.",
            ["source", "reason"],
        )
        self.pages_skipped = metrics.counter(
            "bbaudit_source_pages_skipped_total",
            "Pages given up on after every retry failed.",
            ["source"],
        ).labels(source)
        self.gap_seconds = metrics.counter(
            "bbaudit_source_gap_seconds_total",
            "Length of time windows a source could not read and skipped.",
            ["source"],
        ).labels(source)

    def reject(self, reason: str, count: int = 1) -> None:
        """Count records that could not be parsed."""
        self.rejected.labels(self.source, reason).inc(count)

    def page_error(self, reason: str) -> None:
        """Count one failed page request."""
        self.page_errors.labels(self.source, reason).inc()

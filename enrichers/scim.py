"""Identity from a SCIM 2.0 directory (Okta, Entra ID, ...): ``GET /Users``.

An author is looked up with ``filter=userName eq "<name>"``, then with
``emails.value eq "<email>"``. Answers are cached (``cache_ttl``), misses too
(``negative_ttl``), so a warm pipeline does no I/O. Requests go through a token
bucket (``rate`` per second) and, when the directory fails repeatedly, a
circuit breaker makes lookups fail fast: events are marked in
``enrichment_errors`` and flow on without waiting. With ``preload`` the whole
directory is paged through (``startIndex``/``count``) at start and every
``refresh_interval``; then an author missing from the listing needs no request.

The bearer token is a secret: it sits only in the client's headers and is never
logged or shown in errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import structlog
from pydantic import Field, SecretStr

from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.plugins import ENRICHERS, Runtime
from collector.settings_types import ByteSize, Duration, PluginSettings
from enrichers.context import mark_errors
from enrichers.identity import (
    DirectoryUser,
    LookupKeys,
    MatchedBy,
    needs_lookup,
    parse_bool,
    record_match,
    record_unmatched,
)
from enrichers.ratelimit import CircuitBreaker, Clock, TokenBucket

logger = structlog.get_logger(__name__)

ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_MAX_PAGES = 10_000


class ScimSettings(PluginSettings):
    """``kind: identity_scim``. ``url`` is the SCIM base, e.g. ``.../scim/v2``."""

    kind: Literal["identity_scim"] = "identity_scim"
    url: str
    token: SecretStr
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout: Duration = 5.0
    cache_ttl: Duration = 3600.0
    negative_ttl: Duration = 600.0
    max_cache_entries: int = Field(default=200_000, ge=100)
    rate: float = Field(default=5.0, gt=0)
    burst: int = Field(default=5, ge=1)
    max_wait: Duration = 1.0
    concurrency: int = Field(default=4, ge=1, le=64)
    failure_threshold: int = Field(default=3, ge=1)
    backoff: Duration = 30.0
    max_backoff: Duration = 600.0
    preload: bool = False
    refresh_interval: Duration = 3600.0
    page_size: int = Field(default=100, ge=1, le=1000)
    # A page of 1000 users with their groups is a few MB; a directory (or a
    # proxy in front of it) that sends more is refused, not buffered whole.
    max_response_bytes: ByteSize = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="a larger answer (decoded) is refused and counted as too_large",
    )


class ScimUnavailableError(Exception):
    """A lookup could not be answered (down, refusing, rate limited)."""


_Found = tuple[DirectoryUser, MatchedBy]
_MISS = object()


class ScimEnricher:
    """Adds ``context["identity"]`` from a SCIM 2.0 directory."""

    def __init__(
        self,
        settings: ScimSettings,
        metrics: Metrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = settings.name or "identity_scim"
        self.settings = settings
        self._clock = clock
        self._cache: dict[str, tuple[float, DirectoryUser | None]] = {}
        self._complete_until = 0.0
        self._bucket = TokenBucket(settings.rate, settings.burst, clock)
        self._breaker = CircuitBreaker(
            settings.failure_threshold, settings.backoff, settings.max_backoff, clock
        )
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._errors = metrics.enrichment_errors
        self._requests = metrics.counter(
            "bbaudit_scim_requests_total",
            "SCIM requests, by enricher and result.",
            ["enricher", "result"],
        )

    async def start(self) -> None:
        """Open the client; with ``preload``, start paging the directory."""
        if self._client is None:
            self._client = self._make_client()
        if self.settings.preload and self._task is None:
            self._task = asyncio.create_task(self._refresh_loop(), name=self.name)

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Match authors from the cache; look up only those not cached."""
        pending: dict[LookupKeys, list[AuditEvent]] = {}
        for event in events:
            keys = needs_lookup(event)
            if keys is None:
                continue
            cached = self._from_cache(keys)
            if cached is _MISS:
                pending.setdefault(keys, []).append(event)
            else:
                self._apply(event, cached)  # type: ignore[arg-type]

        if pending:
            await self._resolve_pending(pending)

    async def aclose(self) -> None:
        """Stop refreshing and close the client. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def arefresh(self) -> int:
        """Page through every user and cache them all; return how many.

        Raises ``ScimUnavailableError`` when a page cannot be read.
        """
        users: list[DirectoryUser] = []
        start = 1
        for _ in range(_MAX_PAGES):
            body = await self._aget(
                {"startIndex": start, "count": self.settings.page_size}
            )
            resources = _resources(body)
            users += [user for user in map(scim_user, resources) if user]
            start += len(resources)
            total = body.get("totalResults")
            if not resources or not isinstance(total, int) or start > total:
                break

        self._cache_listing(users)
        logger.info("scim.preloaded", enricher=self.name, users=len(users))
        return len(users)

    def _make_client(self) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = True
        if not self.settings.verify_tls:
            logger.warning("scim.tls_unverified", enricher=self.name)
            verify = False
        elif self.settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.settings.ca_file))
        token = self.settings.token.get_secret_value()
        return httpx.AsyncClient(
            base_url=self.settings.url.rstrip("/") + "/",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/scim+json, application/json",
            },
            verify=verify,
            timeout=httpx.Timeout(self.settings.timeout),
            follow_redirects=False,
            trust_env=False,  # the token goes to the configured URL only
        )

    def _apply(self, event: AuditEvent, found: _Found | None) -> None:
        if found is None:
            record_unmatched(event)
        else:
            record_match(event, found[0], found[1], self.name)

    def _from_cache(self, keys: LookupKeys) -> _Found | object | None:
        """The cached answer, ``None`` for a known miss, ``_MISS`` if unknown."""
        now = self._clock()
        complete = now < self._complete_until
        unknown = False
        for key, how in ((keys.username, "username"), (keys.email, "email")):
            if key is None:
                continue
            entry = self._cache.get(f"{how}:{key}")
            if entry is not None and entry[0] > now:
                if entry[1] is not None:
                    return entry[1], how
            elif not complete:
                unknown = True
        return _MISS if unknown else None

    async def _resolve_pending(
        self, pending: dict[LookupKeys, list[AuditEvent]]
    ) -> None:
        if self._breaker.is_open:
            failed = [e for events in pending.values() for e in events]
            self._fail(failed, "directory unavailable (circuit open)")
            return

        keys = list(pending)
        results = await asyncio.gather(
            *(self._alookup(k) for k in keys), return_exceptions=True
        )
        failed = []
        reason = ""
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, ScimUnavailableError):
                failed += pending[key]
                reason = str(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                for event in pending[key]:
                    self._apply(event, result)
        if failed:
            self._fail(failed, reason)

    def _fail(self, events: list[AuditEvent], reason: str) -> None:
        mark_errors(events, self.name, reason)
        self._errors.labels(enricher=self.name).inc()

    # TODO: share in-flight lookups between concurrent enrich calls, matters when
    # the pipeline enriches several batches at once (today it runs one at a time).
    async def _alookup(self, keys: LookupKeys) -> _Found | None:
        """Username first, then email; every answer is cached."""
        async with self._semaphore:
            for value, how, attribute in (
                (keys.username, "username", "userName"),
                (keys.email, "email", "emails.value"),
            ):
                if value is None:
                    continue
                entry = self._cache.get(f"{how}:{value}")
                if entry is not None and entry[0] > self._clock():
                    if entry[1] is not None:
                        return entry[1], how  # type: ignore[return-value]
                    continue
                user = await self._afind(attribute, value)
                self._remember(how, value, user)
                if user is not None:
                    return user, how  # type: ignore[return-value]
        return None

    async def _afind(self, attribute: str, value: str) -> DirectoryUser | None:
        query = f'{attribute} eq "{_quote(value)}"'
        body = await self._aget({"filter": query, "startIndex": 1, "count": 2})
        users = [user for user in map(scim_user, _resources(body)) if user]
        if attribute == "userName":
            users = [u for u in users if u.username.lower() == value]
        # Two people sharing an address cannot identify either of them.
        return users[0] if len(users) == 1 else None

    async def _aget(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """One rate-limited, breaker-guarded ``GET /Users``."""
        if self._breaker.is_open:
            raise ScimUnavailableError("directory unavailable (circuit open)")
        wait = self._bucket.reserve(self.settings.max_wait)
        if wait is None:
            self._requests.labels(enricher=self.name, result="throttled").inc()
            raise ScimUnavailableError("lookup rate limit reached")
        if wait > 0:
            await asyncio.sleep(wait)

        client = self._client or self._make_client()
        self._client = client
        try:
            status, headers, body = await self._fetch(client, params)
        except httpx.HTTPError as exc:
            self._failed("transport", open_for=None)
            raise ScimUnavailableError(
                f"request failed: {type(exc).__name__}"
            ) from None

        return self._read(status, headers, body)

    async def _fetch(
        self, client: httpx.AsyncClient, params: Mapping[str, Any]
    ) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body of ``GET /Users``, the body read up to the cap."""
        limit = self.settings.max_response_bytes
        async with client.stream("GET", "Users", params=dict(params)) as response:
            if response.status_code != 200:
                # Only the status and Retry-After matter on an error.
                return response.status_code, response.headers, b""
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                self._too_large(f"content-length {declared}")
            chunks: list[bytes] = []
            size = 0
            # Decoded sizes are counted, so a gzip bomb meets the cap too.
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    self._too_large(f"more than {limit} bytes")
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)

    def _too_large(self, detail: str) -> None:
        logger.warning("scim.answer_too_large", enricher=self.name, detail=detail)
        self._failed("too_large", open_for=None)
        raise ScimUnavailableError(f"directory answer too large ({detail})")

    def _read(self, status: int, headers: httpx.Headers, body: bytes) -> dict[str, Any]:
        if status == 404:
            self._breaker.record_success()
            self._requests.labels(enricher=self.name, result="not_found").inc()
            return {"totalResults": 0, "Resources": []}
        if status in (401, 403):
            # A rejected token does not fix itself in seconds: back off long.
            self._failed(f"http_{status}", open_for=self.settings.max_backoff)
            raise ScimUnavailableError(f"directory refused the token (HTTP {status})")
        if status == 429:
            self._failed("http_429", open_for=_retry_after(headers, self.settings))
            raise ScimUnavailableError("directory rate limit (HTTP 429)")
        if status != 200:
            self._failed("http_5xx" if status >= 500 else "http_4xx", open_for=None)
            raise ScimUnavailableError(f"directory answered HTTP {status}")

        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._failed("bad_body", open_for=None)
            raise ScimUnavailableError("directory answer is not JSON") from None
        if not isinstance(parsed, dict):
            self._failed("bad_body", open_for=None)
            raise ScimUnavailableError("directory answer is not a ListResponse")

        self._breaker.record_success()
        self._requests.labels(enricher=self.name, result="ok").inc()
        return parsed

    def _failed(self, result: str, *, open_for: float | None) -> None:
        self._requests.labels(enricher=self.name, result=result).inc()
        if self._breaker.record_failure(open_for=open_for):
            logger.warning(
                "scim.circuit_opened",
                enricher=self.name,
                result=result,
                delay_s=round(self._breaker.retry_in(), 3),
            )

    def _remember(self, how: str, value: str, user: DirectoryUser | None) -> None:
        ttl = self.settings.cache_ttl if user else self.settings.negative_ttl
        self._store(f"{how}:{value}", user, ttl)
        if user is not None:
            self._store(f"username:{user.username.lower()}", user, ttl)
            if user.email:
                self._store(f"email:{user.email.lower()}", user, ttl)

    def _store(self, key: str, user: DirectoryUser | None, ttl: float) -> None:
        self._cache.pop(key, None)
        self._cache[key] = (self._clock() + ttl, user)
        if len(self._cache) > self.settings.max_cache_entries:
            self._evict()

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expiry, _) in self._cache.items() if expiry <= now]:
            del self._cache[key]
        # Entries are in insertion order: drop the oldest tenth if still full.
        excess = len(self._cache) - self.settings.max_cache_entries * 9 // 10
        for key in list(self._cache)[: max(0, excess)]:
            del self._cache[key]

    def _cache_listing(self, users: list[DirectoryUser]) -> None:
        ttl = self.settings.refresh_interval + self.settings.cache_ttl
        seen_emails: set[str] = set()
        for user in users:
            self._store(f"username:{user.username.lower()}", user, ttl)
            email = (user.email or "").lower()
            if email and email not in seen_emails:
                self._store(f"email:{email}", user, ttl)
                seen_emails.add(email)
        self._complete_until = self._clock() + ttl

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.arefresh()
            except ScimUnavailableError as exc:
                logger.error("scim.preload_failed", enricher=self.name, error=str(exc))
            await asyncio.sleep(self.settings.refresh_interval)


def scim_user(resource: Any) -> DirectoryUser | None:
    """A SCIM User resource as a ``DirectoryUser`` (``None`` without userName)."""
    if not isinstance(resource, Mapping):
        return None
    username = _str(resource.get("userName"))
    if username is None:
        return None
    enterprise = resource.get(ENTERPRISE_SCHEMA)
    enterprise = enterprise if isinstance(enterprise, Mapping) else {}
    # Some directories send "active" as the string "false": read it as a flag,
    # never by truthiness (a non-empty string would look active).
    try:
        active = parse_bool(resource.get("active"))
    except ValueError:
        active = None
    return DirectoryUser(
        username=username,
        email=_primary_email(resource.get("emails")),
        display_name=_str(resource.get("displayName")) or _formatted(resource),
        department=_str(enterprise.get("department")),
        title=_str(resource.get("title")),
        manager=_manager(enterprise.get("manager")),
        # SCIM knows only active or not; a deleted user is simply not found.
        # TODO: read MFA enrolment (Okta factors API, Entra authentication
        # methods), matters when a rule needs mfa_enrolled for SCIM-only users.
        status=None if active is None else ("active" if active else "suspended"),
        mfa_enrolled=None,
        groups=_groups(resource.get("groups")),
    )


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _formatted(resource: Mapping[str, Any]) -> str | None:
    name = resource.get("name")
    if not isinstance(name, Mapping):
        return None
    formatted = _str(name.get("formatted"))
    if formatted:
        return formatted
    parts = [_str(name.get("givenName")), _str(name.get("familyName"))]
    return " ".join(p for p in parts if p) or None


def _primary_email(emails: Any) -> str | None:
    if not isinstance(emails, list):
        return None
    values = [e for e in emails if isinstance(e, Mapping) and _str(e.get("value"))]
    primary = [e for e in values if e.get("primary") is True]
    chosen = primary or values
    return _str(chosen[0].get("value")) if chosen else None


def _manager(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _str(value.get("displayName")) or _str(value.get("value"))
    return _str(value)


def _groups(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    names = [_str(g.get("display")) for g in value if isinstance(g, Mapping)]
    return tuple(n for n in names if n)


def _resources(body: Mapping[str, Any]) -> list[Any]:
    resources = body.get("Resources")
    return resources if isinstance(resources, list) else []


def _quote(value: str) -> str:
    """Escape a value for a SCIM filter string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _retry_after(headers: httpx.Headers, settings: ScimSettings) -> float:
    header = headers.get("Retry-After", "")
    try:
        seconds = float(header)
    except ValueError:
        return settings.backoff
    return min(max(seconds, 0.0), settings.max_backoff)


def _build(settings: ScimSettings, runtime: Runtime) -> ScimEnricher:
    return ScimEnricher(settings, runtime.metrics)


ENRICHERS.register(
    "identity_scim",
    ScimSettings,
    _build,
    "identity from a SCIM 2.0 directory (Okta, Entra ID), cached and rate-limited",
)

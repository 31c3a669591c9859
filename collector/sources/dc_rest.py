"""The Bitbucket Data Center auditing REST API as a polling source (kind ``dc_rest``).

Each poll cycle reads the window [``last_ts - overlap``, ``now - settle_lag``]
from ``/rest/auditing/1.0/events``. Pages come newest first, so the checkpoint
cannot simply be "the newest event seen": a crash after page 1 would skip the
older pages (elastic/integrations#12873). Instead every page's checkpoint
carries the whole cycle state (bounds, cursor, newest time so far) and a
restart resumes mid-cycle; only a completed cycle moves ``last_ts``.

A page that fails every retry is not allowed to stop ingestion (the poison
page of elastic/integrations#18144): the query window is halved towards the
unread part until the bad region is narrower than ``min_gap``, which is then
skipped, logged at ERROR and counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from collector.errors import BitbucketAPIError, EventParseError
from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.normalize.dc import normalize_dc
from collector.plugins import SOURCES, Runtime
from collector.settings_types import (
    ByteSize,
    Duration,
    PluginSettings,
    StrictModel,
)
from collector.sources.http_common import (
    ACCEPT_JSON,
    AuthFailedError,
    Clock,
    PageError,
    PageRequest,
    PollMetrics,
    RetryPolicy,
    SystemClock,
    get_json_with_retry,
    make_client,
)
from collector.stages import SourceBatch

logger = structlog.get_logger(__name__)

EVENTS_PATH = "/rest/auditing/1.0/events"
SEARCH_ACTION = "audit.searched"
_ONE_MS = timedelta(milliseconds=1)


class DcAuth(StrictModel):
    """Basic (``username`` + ``password``) or bearer (``token``) credentials."""

    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> DcAuth:
        basic = self.username is not None and self.password is not None
        if basic == (self.token is not None):
            raise ValueError("give either username and password, or token")
        return self


class DcRestSettings(PluginSettings):
    """Config of one ``dc_rest`` source."""

    kind: Literal["dc_rest"] = "dc_rest"
    base_url: str
    auth: DcAuth
    instance: str = ""
    poll_interval: Duration = 60.0
    overlap: Duration = 600.0
    settle_lag: Duration = 30.0
    lookback: Duration = 86400.0
    limit: int = Field(default=500, ge=1, le=100_000)
    max_page_retries: int = Field(default=5, ge=1, le=50)
    request_timeout: Duration = 30.0
    request_deadline: Duration = 120.0
    max_response_bytes: ByteSize = 32 * 1024 * 1024
    ca_file: Path | None = None
    verify: bool = True
    collector_account: str | None = None
    follow_next_page_link: Literal[False] = False
    backoff_cap: Duration = 60.0
    auth_backoff: Duration = 300.0
    min_gap: Duration = 1.0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("base_url must start with https:// or http://")
        return value.rstrip("/")

    @property
    def instance_name(self) -> str:
        """The instance label put on every audit event."""
        return self.instance or self.name

    @property
    def own_account(self) -> str | None:
        """Whose audit-search events are the collector's own."""
        return self.collector_account or self.auth.username


@dataclass(slots=True)
class Cycle:
    """Where one poll cycle stands; serialized into every page's checkpoint.

    The cycle reads [``lower``, ``to``] newest first as a series of queries
    [``floor``, ``upper``]; normally one, more after a poison page narrowed it.
    """

    lower: datetime
    to: datetime
    upper: datetime
    floor: datetime
    cursor: str | None = None
    newest: datetime | None = None
    oldest: datetime | None = None
    step: timedelta | None = None
    page: int = 0
    completed: bool = False
    boundary_ids: set[str] = field(default_factory=set)
    seen_cursors: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "lower": _iso(self.lower),
            "to": _iso(self.to),
            "upper": _iso(self.upper),
            "floor": _iso(self.floor),
            "cursor": self.cursor,
            "newest": _iso(self.newest) if self.newest else None,
            "oldest": _iso(self.oldest) if self.oldest else None,
            "step_ms": _ms(self.step) if self.step else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cycle:
        cursor = data.get("cursor")
        return cls(
            lower=_parse(data["lower"]),
            to=_parse(data["to"]),
            upper=_parse(data["upper"]),
            floor=_parse(data["floor"]),
            cursor=cursor if isinstance(cursor, str) else None,
            newest=_parse(data["newest"]) if data.get("newest") else None,
            oldest=_parse(data["oldest"]) if data.get("oldest") else None,
            step=_step(data.get("step_ms")),
        )

    def next_query(self, upper: datetime) -> bool:
        """Move on to the part older than ``upper``; False when none is left.

        After a poison page the window is read in steps: a step that worked
        is doubled for the next query, so the cycle regains full speed in a
        few queries instead of failing again on the whole remaining window.
        """
        self.cursor = None
        self.seen_cursors.clear()
        if upper < self.lower:
            return False
        self.upper = upper
        self.floor = self.lower
        if self.step is not None:
            self.floor = max(self.lower, _floor_ms(upper - self.step))
            self.step *= 2
        return True

    def end_query(self) -> bool:
        """The current query is read; True when an older part is left.

        The next query's ``to`` repeats ``floor`` because whether ``to`` is
        inclusive is not documented; the repeated events are dropped by id.
        """
        if self.floor <= self.lower:
            self.cursor = None
            return False
        return self.next_query(self.floor)


@dataclass(slots=True)
class CycleCounts:
    """What one cycle did, for the ``poll.completed`` line."""

    fetched: int = 0
    pages: int = 0
    rejected: int = 0
    filtered: int = 0
    skipped_pages: int = 0


@dataclass(slots=True)
class PageOutcome:
    """One read page, turned into audit events."""

    events: list[AuditEvent]
    rejected: int
    done: bool


class DcRestSource:
    """Polls the DC auditing REST API; implements ``collector.stages.Source``."""

    kind = "dc_rest"

    def __init__(
        self,
        settings: DcRestSettings,
        *,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._rng = rng
        self._metrics = PollMetrics(metrics, self.name)
        self._client = _client(settings, transport)
        self._policy = RetryPolicy(
            attempts=settings.max_page_retries, cap_s=settings.backoff_cap
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Yield one batch per page; the last batch of a cycle moves ``last_ts``.

        A checkpoint taken mid-cycle resumes that cycle at its cursor. Without
        ``follow``, a resumed cycle is finished and then one fresh cycle is read.
        """
        last_ts, cycle = _load_checkpoint(checkpoint, self.name)
        resumed = cycle is not None
        while True:
            if cycle is None:
                cycle = self._new_cycle(last_ts, follow=follow)
            if cycle is None and not follow:
                yield self._batch([], last_ts, None, caught_up=True)
                return
            if cycle is not None:
                async for batch in self._run_cycle(cycle, last_ts, follow=follow):
                    yield batch
                if not cycle.completed:
                    return
                last_ts = _advance(last_ts, cycle, self.settings.overlap)
                cycle = None

            if not follow:
                if not resumed:
                    return
                resumed = False
                continue
            await self._clock.sleep(self.settings.poll_interval)

    def _new_cycle(self, last_ts: datetime | None, *, follow: bool) -> Cycle | None:
        now = _floor_ms(self._clock.now())
        to = now - timedelta(seconds=self.settings.settle_lag) if follow else now
        if last_ts is None:
            lower = to - timedelta(seconds=self.settings.lookback)
        else:
            lower = last_ts - timedelta(seconds=self.settings.overlap)
        lower = _floor_ms(lower)
        if lower >= to:
            return None
        # TODO: read a long first window in bounded slices (a day each),
        # matters when lookback is weeks and the server times out on it.
        return Cycle(lower=lower, to=to, upper=to, floor=lower)

    async def _run_cycle(
        self, cycle: Cycle, last_ts: datetime | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        started = time.monotonic()
        counts = CycleCounts()
        while True:
            outcome = await self._read_page(cycle, counts, follow=follow)
            if outcome is None:
                # Authentication failed and we are not following: end the pass
                # without moving the checkpoint.
                yield SourceBatch(source=self.name, events=[], caught_up=True)
                return
            counts.fetched += len(outcome.events)
            counts.rejected += outcome.rejected
            if outcome.done:
                break
            yield self._batch(outcome.events, last_ts, cycle, rejected=outcome.rejected)

        cycle.completed = True
        final_ts = _advance(last_ts, cycle, self.settings.overlap)
        self._log_cycle(cycle, counts, time.monotonic() - started)
        yield self._batch(
            outcome.events, final_ts, None, rejected=outcome.rejected, caught_up=True
        )

    async def _read_page(
        self, cycle: Cycle, counts: CycleCounts, *, follow: bool
    ) -> PageOutcome | None:
        """Read the next page of ``cycle``, retrying, narrowing or waiting as needed.

        Returns ``None`` only when authentication failed and ``follow`` is off.
        """
        while True:
            cycle.page += 1
            try:
                page = await self._fetch(cycle)
                outcome = self._take_page(page, cycle, counts)
            except AuthFailedError as exc:
                self._log_auth(exc, follow=follow)
                if not follow:
                    return None
                await self._clock.sleep(self.settings.auth_backoff)
                continue
            except (PageError, BitbucketAPIError) as exc:
                if _rejects_cursor(exc) and self._drop_cursor(cycle):
                    continue
                counts.skipped_pages += 1
                if self._skip_page(cycle, exc):
                    return PageOutcome([], 0, done=True)
                continue
            counts.pages += 1
            return outcome

    async def _fetch(self, cycle: Cycle) -> tuple[list[Any], Mapping[str, Any]]:
        params: dict[str, str | int] = {
            "from": _iso(cycle.floor),
            "to": _iso(cycle.upper),
            "limit": self.settings.limit,
        }
        if cycle.cursor is not None:
            params["pageCursor"] = cycle.cursor
        request = PageRequest(
            EVENTS_PATH,
            params,
            max_bytes=self.settings.max_response_bytes,
            deadline_s=self.settings.request_deadline,
        )

        def failed(error: PageError, attempt: int, delay: float | None) -> None:
            self._metrics.page_error(error.reason)
            log = logger.warning if delay is not None else logger.error
            log(
                "source.page_failed",
                source=self.name,
                page=cycle.page,
                cursor=cycle.cursor,
                reason=error.reason,
                detail=error.detail,
                attempt=attempt + 1,
                delay_s=None if delay is None else round(delay, 3),
            )

        return await get_json_with_retry(
            self._client,
            request,
            clock=self._clock,
            policy=self._policy,
            on_failure=failed,
            check=_page_parts,
            rng=self._rng,
        )

    def _take_page(
        self,
        page: tuple[list[Any], Mapping[str, Any]],
        cycle: Cycle,
        counts: CycleCounts,
    ) -> PageOutcome:
        """Normalize one page's entities and move the cycle past it."""
        entities, paging = page
        events: list[AuditEvent] = []
        rejected = 0
        reached_floor = False
        for index, entity in enumerate(entities):
            event = self._normalize(entity, cycle, index)
            if event is None:
                rejected += 1
                continue
            if event.time < cycle.floor:
                reached_floor = True
                break
            if self._keep(event, cycle, counts):
                events.append(event)

        if reached_floor or self._is_last(entities, paging, cycle):
            return PageOutcome(events, rejected, done=not cycle.end_query())
        return PageOutcome(events, rejected, done=False)

    def _normalize(self, entity: Any, cycle: Cycle, index: int) -> AuditEvent | None:
        try:
            return normalize_dc(
                entity, instance=self.settings.instance_name, source_kind=self.kind
            )
        except (ValueError, TypeError) as exc:
            error = EventParseError(
                str(exc)[:200],
                source=self.name,
                position=f"page {cycle.page} index {index} cursor {cycle.cursor}",
            )
            logger.error(
                "source.record_rejected",
                source=self.name,
                position=error.position,
                reason=error.reason,
            )
            self._metrics.reject("invalid_record")
            return None

    def _keep(self, event: AuditEvent, cycle: Cycle, counts: CycleCounts) -> bool:
        """Track the cycle's time bounds; False for repeats and own searches."""
        if cycle.newest is None or event.time > cycle.newest:
            cycle.newest = event.time
        if event.id in cycle.boundary_ids:
            return False
        if cycle.oldest is None or event.time < cycle.oldest:
            cycle.oldest = event.time
            cycle.boundary_ids = {event.id}
        elif event.time == cycle.oldest:
            cycle.boundary_ids.add(event.id)

        if self._is_own_search(event):
            counts.filtered += 1
            self._metrics.filtered.inc()
            return False
        return True

    def _is_own_search(self, event: AuditEvent) -> bool:
        own = self.settings.own_account
        if event.action != SEARCH_ACTION or not own or not event.actor.name:
            return False
        return event.actor.name.casefold() == own.casefold()

    def _is_last(
        self, entities: list[Any], paging: Mapping[str, Any], cycle: Cycle
    ) -> bool:
        if paging.get("lastPage") is True:
            return True
        cursor = _next_cursor(paging)
        if not entities or cursor is None or cursor in cycle.seen_cursors:
            reason = "empty_page" if not entities else "no_cursor"
            if cursor is not None and cursor in cycle.seen_cursors:
                reason = "cursor_repeated"
            self._metrics.page_error(reason)
            logger.warning(
                "source.paging_stopped",
                source=self.name,
                page=cycle.page,
                reason=reason,
                cursor=cursor,
            )
            return True
        cycle.seen_cursors.add(cursor)
        cycle.cursor = cursor
        return False

    def _drop_cursor(self, cycle: Cycle) -> bool:
        """Re-query the unread part by time after the server refused a cursor
        (e.g. one kept across a restart). The boundary events repeat and are
        dropped by id. False when that would not move the window down.
        """
        if cycle.cursor is None or cycle.oldest is None:
            return False
        if cycle.oldest >= cycle.upper:
            return False
        logger.warning("source.cursor_rejected", source=self.name, cursor=cycle.cursor)
        cycle.cursor = None
        cycle.seen_cursors.clear()
        cycle.upper = cycle.oldest
        return True

    def _skip_page(self, cycle: Cycle, error: Exception) -> bool:
        """Narrow the query past a page that failed every retry.

        Halves the unread window towards its newest part; once it is narrower
        than ``min_gap`` the window is given up. Returns True when the cycle
        has nothing left to read.
        """
        upper = cycle.upper
        if cycle.cursor is not None and cycle.oldest is not None:
            upper = min(cycle.oldest, cycle.upper)
        width = upper - cycle.floor
        self._metrics.pages_skipped.inc()
        reason = (
            getattr(error, "reason", None) or f"http_{getattr(error, 'status', '')}"
        )
        logger.error(
            "source.page_skipped",
            source=self.name,
            page=cycle.page,
            window_from=_iso(cycle.floor),
            window_to=_iso(upper),
            cursor=cycle.cursor,
            reason=reason,
        )

        if width.total_seconds() > self.settings.min_gap:
            cycle.cursor = None
            cycle.seen_cursors.clear()
            cycle.upper = upper
            cycle.step = width / 2
            cycle.floor = _floor_ms(upper - cycle.step)
            return False

        self._metrics.gap_seconds.inc(max(width.total_seconds(), 0.001))
        logger.error(
            "source.window_skipped",
            source=self.name,
            gap_from=_iso(cycle.floor),
            gap_to=_iso(upper),
        )
        return not cycle.next_query(cycle.floor - _ONE_MS)

    def _log_auth(self, error: AuthFailedError, *, follow: bool) -> None:
        self._metrics.page_error(f"http_{error.status}")
        logger.error(
            "source.auth_failed",
            source=self.name,
            status=error.status,
            hint="credentials rejected or lacking admin permission",
            retry_in_s=self.settings.auth_backoff if follow else None,
        )

    def _batch(
        self,
        events: list[AuditEvent],
        last_ts: datetime | None,
        cycle: Cycle | None,
        *,
        rejected: int = 0,
        caught_up: bool = False,
    ) -> SourceBatch:
        checkpoint = {
            "v": 1,
            "last_ts": _iso(last_ts) if last_ts else None,
            "cycle": cycle.to_json() if cycle else None,
        }
        return SourceBatch(
            source=self.name,
            events=events,
            checkpoint=checkpoint,
            rejected=rejected,
            caught_up=caught_up,
        )

    def _log_cycle(self, cycle: Cycle, counts: CycleCounts, duration: float) -> None:
        now = self._clock.now()
        self._metrics.duration.observe(duration)
        self._metrics.last_success.set(now.timestamp())
        lag = (now - cycle.newest).total_seconds() if cycle.newest else None
        logger.info(
            "poll.completed",
            source=self.name,
            fetched=counts.fetched,
            pages=counts.pages,
            rejected=counts.rejected,
            filtered=counts.filtered,
            skipped_pages=counts.skipped_pages,
            lag_s=None if lag is None else round(lag, 3),
            duration_s=round(duration, 3),
            window_from=_iso(cycle.lower),
            window_to=_iso(cycle.to),
        )


def _client(
    settings: DcRestSettings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    headers = dict(ACCEPT_JSON)
    auth: tuple[str, str] | None = None
    if settings.auth.token is not None:
        headers["Authorization"] = f"Bearer {settings.auth.token.get_secret_value()}"
    elif settings.auth.username is not None and settings.auth.password is not None:
        auth = (settings.auth.username, settings.auth.password.get_secret_value())
    return make_client(
        base_url=settings.base_url,
        verify=settings.verify,
        ca_file=settings.ca_file,
        timeout_s=settings.request_timeout,
        headers=headers,
        auth=auth,
        transport=transport,
    )


def _page_parts(page: Any) -> tuple[list[Any], Mapping[str, Any]]:
    if not isinstance(page, Mapping):
        raise PageError("wrong_shape", "page is not a JSON object")
    entities = page.get("entities", [])
    paging = page.get("pagingInfo", {})
    if entities is None:
        entities = []
    if not isinstance(entities, list):
        raise PageError("wrong_shape", "entities is not a list")
    if not isinstance(paging, Mapping):
        raise PageError("wrong_shape", "pagingInfo is not an object")
    return entities, paging


def _next_cursor(paging: Mapping[str, Any]) -> str | None:
    """``nextPageCursor`` as a string: servers send a string or ``{"cursor": s}``."""
    cursor = paging.get("nextPageCursor")
    if isinstance(cursor, Mapping):
        cursor = cursor.get("cursor")
    if isinstance(cursor, (int, float)) and not isinstance(cursor, bool):
        cursor = str(cursor)
    return cursor if isinstance(cursor, str) and cursor else None


def _rejects_cursor(error: Exception) -> bool:
    status = getattr(error, "status", None)
    return isinstance(status, int) and status in (400, 404, 422)


def _advance(last_ts: datetime | None, cycle: Cycle, overlap_s: float) -> datetime:
    """The next ``last_ts``: the newest event read, but never so old that the
    next window grows without bound on a quiet instance.
    """
    candidates = [cycle.to - timedelta(seconds=overlap_s)]
    if last_ts is not None:
        candidates.append(last_ts)
    if cycle.newest is not None:
        candidates.append(min(cycle.newest, cycle.to))
    return max(candidates)


def _load_checkpoint(
    checkpoint: Any, source: str
) -> tuple[datetime | None, Cycle | None]:
    if checkpoint is None:
        return None, None
    try:
        last = checkpoint.get("last_ts")
        last_ts = _parse(last) if last else None
        cycle_data = checkpoint.get("cycle")
        cycle = Cycle.from_json(cycle_data) if cycle_data else None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        logger.error(
            "source.checkpoint_unreadable", source=source, reason=str(exc)[:120]
        )
        return None, None
    return last_ts, cycle


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


def _step(value: Any) -> timedelta | None:
    if isinstance(value, int) and value > 0:
        return timedelta(milliseconds=value)
    return None


def _floor_ms(when: datetime) -> datetime:
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _iso(when: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and an explicit ``Z``: a bound without
    an offset silently returns nothing (elastic/integrations#18138).
    """
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _parse(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("expected an ISO 8601 string")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _build(settings: DcRestSettings, runtime: Runtime) -> DcRestSource:
    return DcRestSource(settings, metrics=runtime.metrics)


SOURCES.register(
    "dc_rest",
    DcRestSettings,
    _build,
    "Bitbucket Data Center auditing REST API (/rest/auditing/1.0/events)",
)

"""The Bitbucket Data Center auditing REST API as a polling source (kind ``dc_rest``).

Each poll cycle reads the window [``last_ts - overlap``, ``now - settle_lag``]
from ``/rest/auditing/1.0/events``. The API pages newest first, but stateful
detections (time windows, "login after N failures", first-seen baselines)
must see history in the order it happened. So the window is cut into time
slices of ``slice`` length that are walked oldest first; each slice is read
whole (newest first, ``pageCursor`` with the same ``from`` and ``to`` on every
request), sorted, and delivered oldest first in batches of ``batch_size``.

Memory stays bounded: a slice that holds more than ``max_slice_events`` is
dropped and read again as two halves, down to ``min_slice``. A flood inside
one ``min_slice`` is delivered as read, each page reversed, with a warning.

Checkpoints never pass unread older pages (elastic/integrations#12873): the
batch that ends a slice records the slice end as the resume point, and the
batches inside a slice carry the previous one, so a crash re-reads at most
one slice (the pipeline drops the repeats by event id). Only a completed
cycle moves ``last_ts``, and the next cycle re-reads ``overlap`` before it
for events that show up late.

A page that fails every retry is not allowed to stop ingestion (the poison
page of elastic/integrations#18144): the slice's query is halved towards the
unread part until the bad region is narrower than ``min_gap``, which is then
skipped, logged at ERROR and counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import aclosing
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
CHECKPOINT_VERSION = 2
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
    """Config of one ``dc_rest`` source.

    ``slice`` is the span read and sorted at a time (a normal poll is one
    slice; a first backfill many); ``max_slice_events`` caps the events held
    for one slice before it is split; ``batch_size`` caps a delivered batch.
    """

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
    # A page that only times out or cannot connect is more likely a slow or
    # overloaded server than a poison page: keep retrying it this long before
    # the window is narrowed around it (5xx and unreadable bodies skip sooner).
    transient_patience: Duration = 600.0
    slice: Duration = 3600.0
    min_slice: Duration = 1.0
    max_slice_events: int = Field(default=20_000, ge=1, le=10_000_000)
    batch_size: int = Field(default=500, ge=1, le=100_000)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("base_url must start with https:// or http://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _slices_fit(self) -> DcRestSettings:
        if not 0.001 <= self.min_slice <= self.slice:
            raise ValueError("need 1ms <= min_slice <= slice")
        if self.max_slice_events < self.limit:
            raise ValueError("max_slice_events must be at least limit")
        return self

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
    """Where one poll cycle stands; serialized into every batch's checkpoint.

    Everything before ``resume`` has been delivered; the slices from
    ``resume`` to ``to`` are left. ``newest`` is the newest event delivered.
    """

    resume: datetime
    to: datetime
    newest: datetime | None = None
    completed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "lower": _iso(self.resume),
            "to": _iso(self.to),
            "newest": _iso(self.newest) if self.newest else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cycle:
        """Read a cycle; a version 1 cycle (newest-first, with a cursor) is
        read again from its start, which repeats events but loses none.
        """
        return cls(
            resume=_parse(data["lower"]),
            to=_parse(data["to"]),
            newest=_parse(data["newest"]) if data.get("newest") else None,
        )


@dataclass(slots=True)
class SliceWalk:
    """The slices of a cycle, oldest first; a split slice comes back as halves."""

    start: datetime
    to: datetime
    span: timedelta
    min_span: timedelta
    pending: list[tuple[datetime, datetime]] = field(default_factory=list)

    def take(self) -> tuple[datetime, datetime] | None:
        """The next slice [lower, upper], or None when the cycle is walked."""
        if self.pending:
            return self.pending.pop()
        if self.start >= self.to:
            return None
        upper = min(self.start + self.span, self.to)
        lower, self.start = self.start, upper
        return lower, upper

    def split(self, lower: datetime, upper: datetime) -> bool:
        """Walk [lower, upper] again as two halves; False when too narrow."""
        middle = _floor_ms(lower + (upper - lower) / 2)
        if upper - lower <= self.min_span or middle <= lower:
            return False
        self.pending += [(middle, upper), (lower, middle)]
        return True

    @property
    def finished(self) -> bool:
        return not self.pending and self.start >= self.to


@dataclass(slots=True)
class SliceRead:
    """Where the reading of one slice [``lower``, ``to``] stands.

    The slice is read newest first as a series of queries [``floor``,
    ``upper``]; normally one, more after a poison page narrowed it.
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
    filtered: int = 0
    auth_failed: bool = False
    failing_since: float | None = None
    boundary_ids: set[str] = field(default_factory=set)
    seen_cursors: set[str] = field(default_factory=set)
    top_ids: set[str] = field(default_factory=set)

    @classmethod
    def over(cls, lower: datetime, upper: datetime) -> SliceRead:
        return cls(lower=lower, to=upper, upper=upper, floor=lower)

    def next_query(self, upper: datetime) -> bool:
        """Move on to the part older than ``upper``; False when none is left.

        After a poison page the slice is read in steps: a step that worked
        is doubled for the next query, so reading regains full speed in a
        few queries instead of failing again on the whole remaining slice.
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
    slices: int = 0
    splits: int = 0


@dataclass(slots=True)
class PageOutcome:
    """One read page, turned into audit events (newest first)."""

    events: list[AuditEvent]
    rejected: int
    done: bool


@dataclass(slots=True)
class Gathered:
    """A slice's events as read; ``overflow`` when it held too many to keep."""

    events: list[AuditEvent] = field(default_factory=list)
    rejected: int = 0
    overflow: bool = False


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
        # What readiness reports about this source: None while pages are read,
        # else why not (credentials rejected, requests refused).
        self.problem: str | None = None
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._rng = rng
        self._metrics = PollMetrics(metrics, self.name)
        self._splits = metrics.counter(
            "bbaudit_source_slice_splits_total",
            "Time slices read again as two halves because they held too many events.",
            ["source"],
        ).labels(self.name)
        self._client = _client(settings, transport)
        self._policy = RetryPolicy(
            attempts=settings.max_page_retries, cap_s=settings.backoff_cap
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Yield batches oldest first; the last batch of a cycle moves ``last_ts``.

        A checkpoint taken mid-cycle resumes that cycle at the start of the
        slice it was in. Without ``follow``, a resumed cycle is finished and
        then one fresh cycle is read.
        """
        last_ts, cycle = _load_checkpoint(checkpoint, self.name)
        resumed = cycle is not None
        while True:
            if cycle is None:
                cycle = self._new_cycle(last_ts, follow=follow)
            if cycle is None and not follow:
                yield self._batch([], self._checkpoint(last_ts, None), caught_up=True)
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
        return Cycle(resume=lower, to=to)

    async def _run_cycle(
        self, cycle: Cycle, last_ts: datetime | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Read the cycle's slices oldest first; each slice is delivered sorted."""
        started = time.monotonic()
        counts = CycleCounts()
        walk = SliceWalk(
            cycle.resume,
            cycle.to,
            timedelta(seconds=self.settings.slice),
            timedelta(seconds=self.settings.min_slice),
        )
        window_from = cycle.resume
        carry: set[str] = set()
        while (bounds := walk.take()) is not None:
            lower, upper = bounds
            counts.slices += 1
            before = self._checkpoint(last_ts, cycle)
            read = SliceRead.over(lower, upper)
            gathered = await self._gather(read, counts, follow=follow)
            if read.auth_failed:
                # Authentication failed and we are not following: end the pass
                # without moving the checkpoint.
                yield SourceBatch(source=self.name, events=[], caught_up=True)
                return
            if gathered.overflow and walk.split(lower, upper):
                self._log_split(lower, upper, counts)
                continue

            events: list[AuditEvent] = []
            if gathered.overflow:
                gathered, read = Gathered(), SliceRead.over(lower, upper)
                async for batch in self._flood(read, counts, before, carry, follow):
                    yield batch
                if read.auth_failed:
                    yield SourceBatch(source=self.name, events=[], caught_up=True)
                    return
                carry = read.top_ids
            else:
                events = _ascending(gathered.events, carry)
                carry = {event.id for event in events if event.time == upper}
            self._note_slice(cycle, read, events, gathered.rejected, counts, upper)

            done = walk.finished
            if done:
                after = self._close_cycle(cycle, last_ts, window_from, counts, started)
            else:
                after = self._checkpoint(last_ts, cycle)
            if events or gathered.rejected or done:
                for batch in self._deliver(events, gathered, before, after, done):
                    yield batch

        if not cycle.completed:
            # Nothing was left to read (a checkpoint taken at the cycle's end).
            after = self._close_cycle(cycle, last_ts, window_from, counts, started)
            yield self._batch([], after, caught_up=True)

    def _close_cycle(
        self,
        cycle: Cycle,
        last_ts: datetime | None,
        window_from: datetime,
        counts: CycleCounts,
        started: float,
    ) -> dict[str, Any]:
        """Log a read cycle; the checkpoint that moves ``last_ts`` past it."""
        cycle.completed = True
        self._log_cycle(cycle, window_from, counts, time.monotonic() - started)
        final_ts = _advance(last_ts, cycle, self.settings.overlap)
        return self._checkpoint(final_ts, None)

    async def _gather(
        self, read: SliceRead, counts: CycleCounts, *, follow: bool
    ) -> Gathered:
        """Read a slice into memory, stopping once it holds too many events."""
        gathered = Gathered()
        async with aclosing(self._pages(read, counts, follow=follow)) as pages:
            async for page in pages:
                gathered.events.extend(page.events)
                gathered.rejected += page.rejected
                if len(gathered.events) > self.settings.max_slice_events:
                    gathered.overflow = True
                    break
        return gathered

    async def _flood(
        self,
        read: SliceRead,
        counts: CycleCounts,
        checkpoint: dict[str, Any],
        carry: set[str],
        follow: bool,
    ) -> AsyncIterator[SourceBatch]:
        """Deliver a slice too full to sort and too narrow to split, as read.

        Each page is reversed, so order holds inside a page but not across
        pages; every batch keeps the slice's starting checkpoint.
        """
        self._metrics.page_error("slice_unordered")
        logger.warning(
            "source.slice_unordered",
            source=self.name,
            window_from=_iso(read.lower),
            window_to=_iso(read.to),
            max_slice_events=self.settings.max_slice_events,
        )
        async with aclosing(self._pages(read, counts, follow=follow)) as pages:
            async for page in pages:
                events = [e for e in reversed(page.events) if e.id not in carry]
                read.top_ids.update(e.id for e in events if e.time == read.to)
                counts.fetched += len(events)
                counts.rejected += page.rejected
                yield self._batch(events, checkpoint, rejected=page.rejected)

    async def _pages(
        self, read: SliceRead, counts: CycleCounts, *, follow: bool
    ) -> AsyncGenerator[PageOutcome, None]:
        """Every page of a slice in the order read; stops early and sets
        ``read.auth_failed`` when authentication failed and not following.
        """
        while True:
            outcome = await self._read_page(read, counts, follow=follow)
            if outcome is None:
                read.auth_failed = True
                return
            yield outcome
            if outcome.done:
                return

    def _note_slice(
        self,
        cycle: Cycle,
        read: SliceRead,
        events: list[AuditEvent],
        rejected: int,
        counts: CycleCounts,
        upper: datetime,
    ) -> None:
        """Move the cycle past a slice that has been read whole."""
        cycle.resume = upper
        if read.newest is not None and (
            cycle.newest is None or read.newest > cycle.newest
        ):
            cycle.newest = read.newest
        counts.fetched += len(events)
        counts.rejected += rejected
        counts.filtered += read.filtered
        if read.filtered:
            self._metrics.filtered.inc(read.filtered)

    def _deliver(
        self,
        events: list[AuditEvent],
        gathered: Gathered,
        before: dict[str, Any],
        after: dict[str, Any],
        done: bool,
    ) -> Iterator[SourceBatch]:
        """A read slice as batches; only the last one moves the checkpoint
        past the slice (and says caught up when it ends the cycle).
        """
        size = self.settings.batch_size
        chunks = [events[i : i + size] for i in range(0, len(events), size)] or [[]]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            yield self._batch(
                chunk,
                after if last else before,
                rejected=gathered.rejected if last else 0,
                caught_up=done and last,
            )

    def _log_split(self, lower: datetime, upper: datetime, counts: CycleCounts) -> None:
        counts.splits += 1
        self._splits.inc()
        logger.info(
            "source.slice_split",
            source=self.name,
            window_from=_iso(lower),
            window_to=_iso(upper),
            max_slice_events=self.settings.max_slice_events,
        )

    async def _read_page(
        self, read: SliceRead, counts: CycleCounts, *, follow: bool
    ) -> PageOutcome | None:
        """Read the next page of ``read``, retrying, narrowing or waiting as needed.

        Returns ``None`` only when authentication failed and ``follow`` is off.
        """
        while True:
            read.page += 1
            try:
                page = await self._fetch(read)
                outcome = self._take_page(page, read)
            except AuthFailedError as exc:
                self._log_auth(exc, follow=follow)
                if not follow:
                    return None
                await self._clock.sleep(self.settings.auth_backoff)
                continue
            except (PageError, BitbucketAPIError) as exc:
                if _rejects_cursor(exc) and self._drop_cursor(read):
                    continue
                if _refused(exc):
                    # A redirect or a client error answers every page alike
                    # (an SSO page or proxy in the way, a wrong base_url):
                    # skipping windows would write data off; wait instead.
                    self._log_refused(exc, follow=follow)
                    if not follow:
                        return None
                    await self._clock.sleep(self.settings.auth_backoff)
                    continue
                if self._still_patient(read, exc):
                    await self._clock.sleep(self.settings.backoff_cap)
                    continue
                counts.skipped_pages += 1
                if self._skip_page(read, exc):
                    return PageOutcome([], 0, done=True)
                continue
            read.failing_since = None
            self.problem = None
            counts.pages += 1
            return outcome

    async def _fetch(self, read: SliceRead) -> tuple[list[Any], Mapping[str, Any]]:
        params: dict[str, str | int] = {
            "from": _iso(read.floor),
            "to": _iso(read.upper),
            "limit": self.settings.limit,
        }
        if read.cursor is not None:
            params["pageCursor"] = read.cursor
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
                page=read.page,
                cursor=read.cursor,
                window_from=params["from"],
                window_to=params["to"],
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
        self, page: tuple[list[Any], Mapping[str, Any]], read: SliceRead
    ) -> PageOutcome:
        """Normalize one page's entities and move the slice read past it.

        Events newer than the query (a server that ignores ``to``) belong to
        a later slice or were read already, and are passed over.
        """
        entities, paging = page
        events: list[AuditEvent] = []
        rejected = 0
        reached_floor = False
        for index, entity in enumerate(entities):
            event = self._normalize(entity, read, index)
            if event is None:
                rejected += 1
                continue
            if event.time < read.floor:
                reached_floor = True
                break
            if event.time <= read.upper and self._keep(event, read):
                events.append(event)

        if reached_floor or self._is_last(entities, paging, read):
            return PageOutcome(events, rejected, done=not read.end_query())
        return PageOutcome(events, rejected, done=False)

    def _normalize(self, entity: Any, read: SliceRead, index: int) -> AuditEvent | None:
        try:
            return normalize_dc(
                entity, instance=self.settings.instance_name, source_kind=self.kind
            )
        # Any error here is about this one record (a normalizer bug included):
        # it must be rejected with its position, never stop the source.
        except Exception as exc:
            error = EventParseError(
                str(exc)[:200],
                source=self.name,
                position=(
                    f"page {read.page} index {index} cursor {read.cursor} "
                    f"window {_iso(read.floor)}..{_iso(read.upper)}"
                ),
            )
            logger.error(
                "source.record_rejected",
                source=self.name,
                position=error.position,
                reason=error.reason,
            )
            self._metrics.reject("invalid_record")
            return None

    def _keep(self, event: AuditEvent, read: SliceRead) -> bool:
        """Track the read's time bounds; False for repeats and own searches."""
        if read.newest is None or event.time > read.newest:
            read.newest = event.time
        if event.id in read.boundary_ids:
            return False
        if read.oldest is None or event.time < read.oldest:
            read.oldest = event.time
            read.boundary_ids = {event.id}
        elif event.time == read.oldest:
            read.boundary_ids.add(event.id)

        if self._is_own_search(event):
            read.filtered += 1
            return False
        return True

    def _is_own_search(self, event: AuditEvent) -> bool:
        own = self.settings.own_account
        if event.action != SEARCH_ACTION or not own or not event.actor.name:
            return False
        return event.actor.name.casefold() == own.casefold()

    def _is_last(
        self, entities: list[Any], paging: Mapping[str, Any], read: SliceRead
    ) -> bool:
        if paging.get("lastPage") is True:
            return True
        cursor = _next_cursor(paging)
        if not entities or cursor is None or cursor in read.seen_cursors:
            reason = "empty_page" if not entities else "no_cursor"
            if cursor is not None and cursor in read.seen_cursors:
                reason = "cursor_repeated"
            self._metrics.page_error(reason)
            # Broken paging (a cursor loop, a missing cursor, an empty page
            # that is not the last) must not end the slice with older pages
            # unread: re-query the unread part by time instead, and stop only
            # when that cannot move the query down any more.
            requery = self._requery_by_time(read)
            logger.warning(
                "source.paging_stopped",
                source=self.name,
                page=read.page,
                reason=reason,
                cursor=cursor,
                requeried=requery,
            )
            return not requery
        read.seen_cursors.add(cursor)
        read.cursor = cursor
        return False

    def _drop_cursor(self, read: SliceRead) -> bool:
        """Re-query the unread part by time after the server refused a cursor
        (e.g. one that expired). The boundary events repeat and are dropped
        by id. False when that would not move the query down.
        """
        if read.cursor is None:
            return False
        cursor = read.cursor
        if not self._requery_by_time(read):
            return False
        logger.warning("source.cursor_rejected", source=self.name, cursor=cursor)
        return True

    def _requery_by_time(self, read: SliceRead) -> bool:
        """Continue the slice with ``to`` = the oldest event read so far.

        ``to`` strictly decreases each time, so this always ends. False when
        nothing was read yet or the oldest event is at the upper bound.
        """
        if read.oldest is None or read.oldest >= read.upper:
            return False
        read.cursor = None
        read.seen_cursors.clear()
        read.upper = read.oldest
        return True

    def _still_patient(self, read: SliceRead, error: Exception) -> bool:
        """Whether a page failing with timeouts or connection errors is retried
        again instead of being skipped (for ``transient_patience``)."""
        if getattr(error, "reason", None) not in _TRANSIENT_REASONS:
            return False
        now = self._clock.monotonic()
        if read.failing_since is None:
            read.failing_since = now
        return now - read.failing_since < self.settings.transient_patience

    def _skip_page(self, read: SliceRead, error: Exception) -> bool:
        """Narrow the query past a page that failed every retry.

        Halves the unread part of the slice towards its newest end; once it
        is narrower than ``min_gap`` it is given up. Returns True when the
        slice has nothing left to read.
        """
        read.failing_since = None
        upper = read.upper
        if read.cursor is not None and read.oldest is not None:
            upper = min(read.oldest, read.upper)
        width = upper - read.floor
        self._metrics.pages_skipped.inc()
        reason = (
            getattr(error, "reason", None) or f"http_{getattr(error, 'status', '')}"
        )
        logger.error(
            "source.page_skipped",
            source=self.name,
            page=read.page,
            window_from=_iso(read.floor),
            window_to=_iso(upper),
            cursor=read.cursor,
            reason=reason,
        )

        if width.total_seconds() > self.settings.min_gap:
            read.cursor = None
            read.seen_cursors.clear()
            read.upper = upper
            read.step = width / 2
            read.floor = _floor_ms(upper - read.step)
            return False

        self._metrics.gap_seconds.inc(max(width.total_seconds(), 0.001))
        logger.error(
            "source.window_skipped",
            source=self.name,
            gap_from=_iso(read.floor),
            gap_to=_iso(upper),
        )
        return not read.next_query(read.floor - _ONE_MS)

    def _log_refused(self, error: Exception, *, follow: bool) -> None:
        status = getattr(error, "status", None)
        self.problem = f"requests refused (HTTP {status})"
        self._metrics.page_error(f"http_{status}")
        logger.error(
            "source.request_refused",
            source=self.name,
            status=status,
            hint="redirect or client error: check base_url, proxies and SSO",
            retry_in_s=self.settings.auth_backoff if follow else None,
        )

    def _log_auth(self, error: AuthFailedError, *, follow: bool) -> None:
        self.problem = f"credentials rejected (HTTP {error.status})"
        self._metrics.page_error(f"http_{error.status}")
        logger.error(
            "source.auth_failed",
            source=self.name,
            status=error.status,
            hint="credentials rejected or lacking admin permission",
            retry_in_s=self.settings.auth_backoff if follow else None,
        )

    def _checkpoint(
        self, last_ts: datetime | None, cycle: Cycle | None
    ) -> dict[str, Any]:
        """Where a restart resumes: ``last_ts`` and the unread part of a cycle."""
        return {
            "v": CHECKPOINT_VERSION,
            "last_ts": _iso(last_ts) if last_ts else None,
            "cycle": cycle.to_json() if cycle else None,
        }

    def _batch(
        self,
        events: list[AuditEvent],
        checkpoint: dict[str, Any],
        *,
        rejected: int = 0,
        caught_up: bool = False,
    ) -> SourceBatch:
        return SourceBatch(
            source=self.name,
            events=events,
            checkpoint=checkpoint,
            rejected=rejected,
            caught_up=caught_up,
        )

    def _log_cycle(
        self,
        cycle: Cycle,
        window_from: datetime,
        counts: CycleCounts,
        duration: float,
    ) -> None:
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
            slices=counts.slices,
            splits=counts.splits,
            lag_s=None if lag is None else round(lag, 3),
            duration_s=round(duration, 3),
            window_from=_iso(window_from),
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


_TRANSIENT_REASONS = frozenset({"timeout", "connection", "deadline"})


def _refused(error: Exception) -> bool:
    """A 3xx or 4xx answer other than 429 (rate limits are retried inside)."""
    status = getattr(error, "status", None)
    return isinstance(status, int) and 300 <= status < 500 and status != 429


def _rejects_cursor(error: Exception) -> bool:
    status = getattr(error, "status", None)
    return isinstance(status, int) and status in (400, 404, 422)


def _ascending(events: list[AuditEvent], skip: set[str]) -> list[AuditEvent]:
    """A slice's events oldest first, each once, less those in ``skip``.

    They were read newest first, and within one millisecond in reverse server
    order; reversing before a stable sort by time keeps the server's own
    order as the tiebreak, so same-millisecond events come out as written.
    """
    unique: dict[str, AuditEvent] = {}
    for event in reversed(events):
        if event.id not in skip:
            unique.setdefault(event.id, event)
    return sorted(unique.values(), key=lambda event: event.time)


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

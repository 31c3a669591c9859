"""The Atlassian organization events stream as a polling source (kind ``cloud_org``).

Bitbucket Cloud's Guard audit events are read from
``GET {base}/admin/v1/orgs/{orgId}/events-stream``, ordered by processing time
and paged by an opaque cursor. The checkpoint holds the cursor to resume with
and the newest ``processedAt`` seen (epoch ms). A cursor is kept only while it
can still move: the page that ends a stream (``meta.next`` null) is re-read by
the same cursor on the next poll, so after a non-empty last page the next poll
starts from ``processedAt - overlap`` instead and duplicates are dropped by id.
One source reads one organization; configure one per org.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field, SecretStr, field_validator

from collector.errors import BitbucketAPIError, EventParseError
from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.normalize.cloud import normalize_cloud, parse_time
from collector.plugins import SOURCES, Runtime
from collector.settings_types import ByteSize, Duration, PluginSettings
from collector.sources.http_common import (
    ACCEPT_JSON,
    AuthFailedError,
    Clock,
    PageError,
    PageRequest,
    PollMetrics,
    RetryPolicy,
    SystemClock,
    TokenBucket,
    get_json_with_retry,
    make_client,
)
from collector.stages import SourceBatch

logger = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.atlassian.com"
_ORG_ID = r"^[A-Za-z0-9-]{1,64}$"
_RECENT_IDS = 20_000


class CloudOrgSettings(PluginSettings):
    """Config of one ``cloud_org`` source (one organization)."""

    kind: Literal["cloud_org"] = "cloud_org"
    org_id: str = Field(pattern=_ORG_ID)
    api_key: SecretStr
    base_url: str = DEFAULT_BASE_URL
    instance: str = ""
    limit: int = Field(default=200, ge=1, le=500)
    poll_interval: Duration = 60.0
    lookback: Duration = 86400.0
    overlap: Duration = 300.0
    requests_per_minute: float = Field(default=45.0, gt=0, le=50)
    burst: int = Field(default=5, ge=1, le=50)
    max_page_retries: int = Field(default=5, ge=1, le=50)
    max_empty_pages: int = Field(default=5, ge=1, le=1000)
    request_timeout: Duration = 30.0
    request_deadline: Duration = 120.0
    max_response_bytes: ByteSize = 32 * 1024 * 1024
    ca_file: Path | None = None
    verify: bool = True
    backoff_cap: Duration = 60.0
    auth_backoff: Duration = 900.0

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


@dataclass(slots=True)
class StreamState:
    """Where the stream stands; this is the checkpoint, as JSON."""

    cursor: str | None = None
    processed_at_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "cursor": self.cursor, "processed_at_ms": self.processed_at_ms}

    @classmethod
    def from_json(cls, data: Any) -> StreamState:
        if not isinstance(data, Mapping):
            return cls()
        cursor = data.get("cursor")
        processed = data.get("processed_at_ms")
        return cls(
            cursor=cursor if isinstance(cursor, str) and cursor else None,
            processed_at_ms=processed if isinstance(processed, int) else None,
        )


@dataclass(slots=True)
class PollCounts:
    """What one poll did, for the ``poll.completed`` line."""

    fetched: int = 0
    pages: int = 0
    rejected: int = 0
    duplicates: int = 0
    empty_pages: int = 0


class CloudOrgSource:
    """Polls one organization's events stream; implements ``Source``."""

    kind = "cloud_org"

    def __init__(
        self,
        settings: CloudOrgSettings,
        *,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = settings.name
        # What readiness reports: None while pages are read, else why not.
        self.problem: str | None = None
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._rng = rng
        self._metrics = PollMetrics(metrics, self.name)
        self._bucket = TokenBucket(
            settings.requests_per_minute / 60.0, settings.burst, self._clock
        )
        self._policy = RetryPolicy(
            attempts=settings.max_page_retries, cap_s=settings.backoff_cap
        )
        self._recent: OrderedDict[str, None] = OrderedDict()
        headers = dict(ACCEPT_JSON)
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = make_client(
            base_url=settings.base_url,
            verify=settings.verify,
            ca_file=settings.ca_file,
            timeout_s=settings.request_timeout,
            headers=headers,
            transport=transport,
        )
        self._path = f"/admin/v1/orgs/{settings.org_id}/events-stream"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Yield one batch per page; each batch's checkpoint resumes after it."""
        state = StreamState.from_json(checkpoint)
        while True:
            async for batch in self._poll(state, follow=follow):
                yield batch
            if not follow:
                return
            await self._clock.sleep(self.settings.poll_interval)

    async def _poll(
        self, state: StreamState, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """One poll: follow ``meta.next`` until the stream has nothing more."""
        started = time.monotonic()
        counts = PollCounts()
        seen_cursors: set[str] = set()
        while True:
            page = await self._read(state, follow=follow)
            if page is None:
                yield SourceBatch(self.name, [], caught_up=True)
                return
            data, next_cursor = page
            events, rejected = self._take(data, state, counts)
            last = self._advance(state, data, next_cursor, seen_cursors, counts)
            yield SourceBatch(
                self.name,
                events,
                checkpoint=state.to_json(),
                rejected=rejected,
                caught_up=last,
            )
            if last:
                break
        self._log_poll(state, counts, time.monotonic() - started)

    async def _read(
        self, state: StreamState, *, follow: bool
    ) -> tuple[list[Any], str | None] | None:
        """The next page as (data, meta.next); ``None`` ends this poll."""
        while True:
            params = self._params(state)
            try:
                return await self._fetch(params, state)
            except AuthFailedError as exc:
                self.problem = f"api key rejected (HTTP {exc.status})"
                self._metrics.page_error(f"http_{exc.status}")
                logger.error(
                    "source.auth_failed",
                    source=self.name,
                    status=exc.status,
                    hint="api key rejected or expired",
                    retry_in_s=self.settings.auth_backoff if follow else None,
                )
                if not follow:
                    return None
                await self._clock.sleep(self.settings.auth_backoff)
            except BitbucketAPIError as exc:
                if state.cursor is None or exc.status != 400:
                    self._give_up(exc, state)
                    return None
                logger.warning(
                    "source.cursor_rejected", source=self.name, status=exc.status
                )
                self._metrics.page_error("cursor_rejected")
                state.cursor = None
            except PageError as exc:
                self._give_up(exc, state)
                return None

    def _params(self, state: StreamState) -> dict[str, str | int]:
        params: dict[str, str | int] = {
            "limit": self.settings.limit,
            "sortOrder": "asc",
        }
        if state.cursor is not None:
            params["cursor"] = state.cursor
            return params
        now_ms = int(self._clock.now().timestamp() * 1000)
        if state.processed_at_ms is None:
            params["from"] = now_ms - int(self.settings.lookback * 1000)
        else:
            params["from"] = state.processed_at_ms - int(self.settings.overlap * 1000)
        return params

    async def _fetch(
        self, params: dict[str, str | int], state: StreamState
    ) -> tuple[list[Any], str | None]:
        await self._bucket.acquire()
        request = PageRequest(
            self._path,
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
                cursor=state.cursor,
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

    def _give_up(self, error: Exception, state: StreamState) -> None:
        # The poll ends without moving the checkpoint; the next poll asks again.
        # TODO: step `from` past a window that fails forever, matters when the
        # API returns 500 for one time range (as DC did in elastic#18144).
        self._metrics.pages_skipped.inc()
        logger.error(
            "source.page_skipped",
            source=self.name,
            cursor=state.cursor,
            processed_at_ms=state.processed_at_ms,
            reason=getattr(error, "reason", None) or str(error)[:80],
        )

    def _take(
        self, data: list[Any], state: StreamState, counts: PollCounts
    ) -> tuple[list[AuditEvent], int]:
        events: list[AuditEvent] = []
        rejected = 0
        for index, item in enumerate(data):
            event = self._normalize(item, state, counts.pages, index)
            if event is None:
                rejected += 1
                continue
            self._note_processed(item, event, state)
            if self._repeat(event.id):
                counts.duplicates += 1
                continue
            events.append(event)
        self.problem = None
        counts.pages += 1
        counts.fetched += len(events)
        counts.rejected += rejected
        return events, rejected

    def _normalize(
        self, item: Any, state: StreamState, page: int, index: int
    ) -> AuditEvent | None:
        try:
            return normalize_cloud(
                item, instance=self.settings.instance_name, source_kind=self.kind
            )
        # Any error here is about this one record (a normalizer bug included):
        # it must be rejected with its position, never stop the source.
        except Exception as exc:
            error = EventParseError(
                str(exc)[:200],
                source=self.name,
                position=f"page {page + 1} index {index} cursor {state.cursor}",
            )
            logger.error(
                "source.record_rejected",
                source=self.name,
                position=error.position,
                reason=error.reason,
            )
            self._metrics.reject("invalid_record")
            return None

    def _note_processed(self, item: Any, event: AuditEvent, state: StreamState) -> None:
        raw = item["attributes"].get("processedAt")
        try:
            when = parse_time(raw, "processedAt") if raw else event.time
        except ValueError:
            when = event.time
        ms = int(when.timestamp() * 1000)
        if state.processed_at_ms is None or ms > state.processed_at_ms:
            state.processed_at_ms = ms

    def _repeat(self, event_id: str) -> bool:
        """True for an id yielded recently; the pipeline dedupes across restarts."""
        if event_id in self._recent:
            return True
        self._recent[event_id] = None
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        return False

    def _advance(
        self,
        state: StreamState,
        data: list[Any],
        next_cursor: str | None,
        seen: set[str],
        counts: PollCounts,
    ) -> bool:
        """Move the state past this page; True when the poll is over."""
        if next_cursor is None:
            # A last page with events would come back again by the same
            # cursor; from `processedAt` the next poll moves on.
            if data:
                state.cursor = None
            return True
        if next_cursor in seen or next_cursor == state.cursor:
            self._stop_paging(state, "cursor_repeated")
            state.cursor = None
            return True
        counts.empty_pages = 0 if data else counts.empty_pages + 1
        seen.add(next_cursor)
        state.cursor = next_cursor
        if counts.empty_pages >= self.settings.max_empty_pages:
            self._stop_paging(state, "empty_pages")
            return True
        return False

    def _stop_paging(self, state: StreamState, reason: str) -> None:
        self._metrics.page_error(reason)
        logger.warning(
            "source.paging_stopped",
            source=self.name,
            reason=reason,
            cursor=state.cursor,
        )

    def _log_poll(
        self, state: StreamState, counts: PollCounts, duration: float
    ) -> None:
        now = self._clock.now()
        self._metrics.duration.observe(duration)
        self._metrics.last_success.set(now.timestamp())
        lag = None
        if state.processed_at_ms is not None:
            lag = round(now.timestamp() - state.processed_at_ms / 1000, 3)
        logger.info(
            "poll.completed",
            source=self.name,
            fetched=counts.fetched,
            pages=counts.pages,
            rejected=counts.rejected,
            filtered=0,
            duplicates=counts.duplicates,
            lag_s=lag,
            duration_s=round(duration, 3),
        )


def _page_parts(page: Any) -> tuple[list[Any], str | None]:
    if not isinstance(page, Mapping):
        raise PageError("wrong_shape", "page is not a JSON object")
    data = page.get("data")
    meta = page.get("meta")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise PageError("wrong_shape", "data is not a list")
    next_cursor = meta.get("next") if isinstance(meta, Mapping) else None
    if not isinstance(next_cursor, str) or not next_cursor:
        next_cursor = None
    return data, next_cursor


def _build(settings: CloudOrgSettings, runtime: Runtime) -> CloudOrgSource:
    return CloudOrgSource(settings, metrics=runtime.metrics)


SOURCES.register(
    "cloud_org",
    CloudOrgSettings,
    _build,
    "Atlassian organization events stream (Bitbucket Cloud via Guard)",
)

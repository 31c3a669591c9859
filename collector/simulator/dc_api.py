"""``GET /rest/auditing/1.0/events`` as documented (reference §2), without HTTP.

- Newest first, ordered by (timestamp, internal id).
- ``from`` and ``to`` are ISO 8601 and both inclusive. A time without a zone
  returns no records and no error (the Jira pitfall in reference §9).
- ``limit`` defaults to 200 and is capped at 1000.
- ``pageCursor`` is ``"<epochMillis>,<id>"`` of the last record of the previous
  page; with a cursor, ``offset`` is ignored.
- ``nextPageLink`` carries only offset, limit and pageCursor (as Elastic's
  mock does), so a client that follows it pages past ``from``.
- Only events whose visible time is at or before the simulated now are listed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from collector.ids import dc_event_id
from collector.simulator.records import DcEvent

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
PATH = "/rest/auditing/1.0/events"


class BadQuery(ValueError):
    """The query cannot be read; the server answers 400 with this message."""


@dataclass(frozen=True, slots=True)
class DcQuery:
    """One parsed request. ``naive`` marks a zone-less bound (answers nothing)."""

    from_ms: int | None
    to_ms: int | None
    limit: int
    offset: int
    cursor: tuple[int, int] | None
    raw_cursor: str | None
    naive: bool = False


@dataclass(frozen=True, slots=True)
class DcPage:
    """One page of results and where it sits in the full result."""

    events: list[DcEvent]
    last_page: bool
    page_index: int
    query: DcQuery


def parse_query(params: dict[str, list[str]]) -> DcQuery:
    """Read the query string; raises ``BadQuery``."""

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    naive = False
    bounds: list[int | None] = []
    for name in ("from", "to"):
        value = one(name)
        if value is None or value == "":
            bounds.append(None)
            continue
        moment = _parse_iso(name, value)
        naive = naive or moment.tzinfo is None
        bounds.append(None if moment.tzinfo is None else _ms(moment))

    limit = _int(one("limit"), "limit", DEFAULT_LIMIT)
    if limit <= 0:
        raise BadQuery("limit must be a positive integer")
    offset = _int(one("offset"), "offset", 0)
    if offset < 0:
        raise BadQuery("offset must not be negative")

    raw_cursor = one("pageCursor")
    cursor = _parse_cursor(raw_cursor) if raw_cursor else None
    return DcQuery(
        bounds[0],
        bounds[1],
        min(limit, MAX_LIMIT),
        offset,
        cursor,
        raw_cursor or None,
        naive,
    )


def _parse_iso(name: str, value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadQuery(f"{name} is not an ISO 8601 date-time: {value[:60]!r}") from exc


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise BadQuery(f"{name} must be an integer") from exc


def _parse_cursor(value: str) -> tuple[int, int]:
    millis, sep, seq = value.partition(",")
    if not sep:
        raise BadQuery("pageCursor must be '<epochMillis>,<id>'")
    try:
        return int(millis), int(seq)
    except ValueError as exc:
        raise BadQuery("pageCursor must be '<epochMillis>,<id>'") from exc


def select(
    events: Sequence[DcEvent],
    keys: Sequence[tuple[int, int]],
    query: DcQuery,
    now_ms: int,
) -> DcPage:
    """The page a query returns from ``events`` (sorted oldest first, with
    their ``(epoch_ms, seq)`` in ``keys``)."""
    if query.naive:
        return DcPage([], True, 0, query)

    top = (query.to_ms, 1 << 62) if query.to_ms is not None else (1 << 62, 0)
    if query.cursor is not None:
        top = min(top, query.cursor)
        upper = bisect.bisect_left(keys, top)
    else:
        upper = bisect.bisect_right(keys, top)
    skip = 0 if query.cursor is not None else query.offset
    before = _matching_before(events, keys, query, now_ms, upper)

    found: list[DcEvent] = []
    index = upper - 1
    while index >= 0 and len(found) <= query.limit:
        event = events[index]
        index -= 1
        if query.from_ms is not None and event.epoch_ms < query.from_ms:
            break
        if event.visible_ms > now_ms:
            continue
        if skip:
            skip -= 1
            continue
        found.append(event)

    last_page = len(found) <= query.limit
    page_index = (before + (0 if query.cursor else query.offset)) // query.limit
    return DcPage(found[: query.limit], last_page, page_index, query)


def _matching_before(
    events: Sequence[DcEvent],
    keys: Sequence[tuple[int, int]],
    query: DcQuery,
    now_ms: int,
    upper: int,
) -> int:
    """How many matching records come before this page (newer than the cursor)."""
    if query.cursor is None:
        return 0
    top = (query.to_ms, 1 << 62) if query.to_ms is not None else (1 << 62, 0)
    start = bisect.bisect_right(keys, top)
    return sum(1 for event in events[upper:start] if event.visible_ms <= now_ms)


def response(
    page: DcPage,
    base_url: str,
    *,
    cursor_object: bool = False,
    loop_cursor: str | None = None,
) -> dict[str, object]:
    """The JSON body for a page."""
    entities = [event.rest_entity() for event in page.events]
    size = len(entities)
    if page.last_page and loop_cursor is None:
        return {"entities": entities, "pagingInfo": {"lastPage": True, "size": size}}

    query = page.query
    cursor = loop_cursor or page.events[-1].cursor()
    next_offset = (0 if query.cursor else query.offset) + size
    link = f"{base_url}{PATH}?" + urlencode(
        {"offset": next_offset, "limit": query.limit, "pageCursor": cursor}
    )
    paging: dict[str, object] = {
        "lastPage": False,
        "nextPageCursor": {"cursor": cursor} if cursor_object else cursor,
        "nextPageLink": link,
        "nextPageOffset": next_offset,
        "size": size,
    }
    return {"entities": entities, "pagingInfo": paging}


def dc_ids(events: Iterable[DcEvent], instance: str) -> set[str]:
    """The ids bbaudit computes for these events (``collector.ids.dc_event_id``)."""
    return {
        dc_event_id(instance, event.rest_entity(), event.epoch_ms * 1_000_000)
        for event in events
    }

"""``GET /admin/v1/orgs/{orgId}/events-stream`` (reference §6.2), without HTTP.

- Ordered by ``processedAt`` ascending (``sortOrder=asc``, the default).
- ``from`` and ``to`` are epoch milliseconds, both inclusive, and bound
  ``processedAt`` (**unverified**: the docs do not say which time they bound;
  Elastic resumes from the last ``processedAt``, which suggests this one).
- The cursor is opaque (base64 of the last position plus the query bounds).
  A page with events always names a next cursor; a page without events is the
  terminal page ``{"data": [], "meta": {"next": null}, "links": {}}``.
- ``limit`` defaults to 200 and is capped at 500.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from collector.simulator.dc_api import BadQuery
from collector.simulator.records import CloudEvent

DEFAULT_LIMIT = 200
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class CloudQuery:
    """One parsed request."""

    from_ms: int | None
    to_ms: int | None
    limit: int
    after: tuple[int, int] | None
    raw_cursor: str | None


@dataclass(frozen=True, slots=True)
class CloudPage:
    """One page and where it sits in the full result."""

    events: list[CloudEvent]
    page_index: int
    query: CloudQuery


def parse_query(params: dict[str, list[str]]) -> CloudQuery:
    """Read the query string; raises ``BadQuery``."""

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    order = one("sortOrder")
    if order not in (None, "", "asc"):
        # TODO: serve sortOrder=desc, matters when a client pages newest first.
        raise BadQuery("the simulator supports sortOrder=asc only")
    asked = _int(one("limit"), "limit")
    if asked is not None and asked <= 0:
        raise BadQuery("limit must be a positive integer")
    limit = min(asked or DEFAULT_LIMIT, MAX_LIMIT)

    raw = one("cursor")
    if raw:
        state = _decode(raw)
        # The cursor keeps the page size it was made with, like the sort order.
        limit = min(asked or int(state.get("l") or DEFAULT_LIMIT), MAX_LIMIT)
        return CloudQuery(
            state.get("f"),
            state.get("t"),
            limit,
            (int(state["p"]), int(state["s"])),
            raw,
        )
    return CloudQuery(
        _int(one("from"), "from"), _int(one("to"), "to"), limit, None, None
    )


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise BadQuery(f"{name} must be epoch milliseconds") from exc


def encode_cursor(position: tuple[int, int], query: CloudQuery) -> str:
    """An opaque cursor naming the last event served and the query bounds."""
    state = {
        "p": position[0],
        "s": position[1],
        "f": query.from_ms,
        "t": query.to_ms,
        "l": query.limit,
    }
    text = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def _decode(raw: str) -> dict[str, int]:
    try:
        padded = raw + "=" * (-len(raw) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(state, dict) or "p" not in state or "s" not in state:
            raise ValueError(raw)
        return state
    except (ValueError, binascii.Error) as exc:
        raise BadQuery("invalid cursor") from exc


def select(
    events: Sequence[CloudEvent],
    keys: Sequence[tuple[int, int]],
    query: CloudQuery,
    now_ms: int,
) -> CloudPage:
    """The page a query returns (``events`` sorted by (processed_ms, seq))."""
    start = 0
    if query.from_ms is not None:
        start = bisect.bisect_left(keys, (query.from_ms, -1))
    low = start
    if query.after is not None:
        low = max(start, bisect.bisect_right(keys, query.after))

    found: list[CloudEvent] = []
    for event in events[low:]:
        if len(found) >= query.limit:
            break
        if event.processed_ms > now_ms:
            break
        if query.to_ms is not None and event.processed_ms > query.to_ms:
            break
        found.append(event)
    page_index = (low - start) // query.limit
    return CloudPage(found, page_index, query)


def response(
    page: CloudPage, org_id: str, base_url: str, *, loop_cursor: str | None = None
) -> dict[str, object]:
    """The JSON body for a page; links point at ``base_url`` (the simulator)."""
    data = [event.rendered() for event in page.events]
    base = f"{base_url}/admin/v1/orgs/{org_id}/events-stream"
    if not data and loop_cursor is None:
        return {
            "data": [],
            "links": {},
            "meta": {
                "attributes": None,
                "next": None,
                "prev": None,
                "current": None,
                "page_size": page.query.limit,
                "start_index": None,
                "end_index": None,
                "total": 0,
            },
        }

    cursor = loop_cursor
    if cursor is None:
        last = page.events[-1]
        cursor = encode_cursor((last.processed_ms, last.seq), page.query)
    links = {"self": base, "next": f"{base}?" + urlencode({"cursor": cursor})}
    return {
        "data": data,
        "links": links,
        "meta": {"next": cursor, "page_size": len(data)},
    }

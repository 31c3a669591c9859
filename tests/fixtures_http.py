"""Test doubles for the HTTP polling sources: a fake clock and in-memory servers
that follow the documented DC auditing and org events-stream protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from collector.model import AuditEvent
from collector.stages import SourceBatch

Fault = Callable[[int, httpx.Request], httpx.Response | None]


class FakeClock:
    """Time that moves only when slept on, so backoff costs nothing."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._mono = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


def iso_ms(when: datetime) -> str:
    """ISO 8601 UTC with milliseconds and Z, as the DC API writes it."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def dc_entity(
    when: datetime,
    n: int,
    *,
    author: str = "alice",
    key: str = "bitbucket.service.repository.audit.action.repositoryaccessed",
    action: str = "Repository accessed by user",
) -> dict[str, Any]:
    """A DC REST ``entities[]`` element, distinct per ``n``."""
    return {
        "timestamp": iso_ms(when),
        "author": {"name": author, "type": "NORMAL", "id": "2"},
        "type": {
            "action": action,
            "actionI18nKey": key,
            "category": "Repositories",
            "categoryI18nKey": "bitbucket.service.audit.category.repositories",
        },
        "affectedObjects": [{"type": "REPOSITORY", "name": f"repo{n}", "id": str(n)}],
        "changedValues": [],
        "extraAttributes": [],
        "source": "10.0.0.5",
        "system": "http://bitbucket.test:7990",
        "node": "node-1",
        "method": "Browser",
    }


def _parse_bound(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timezone-less bound")
    return parsed


class DcAuditServer:
    """The DC auditing REST API over a fixed list of entities.

    Newest first; ``from`` and ``to`` inclusive; ``pageCursor`` is
    ``"<epochMillis>,<seq>"`` of the last entity of the previous page, sent as a
    string or as ``{"cursor": ...}``. A bound without an offset returns an empty
    result, as Jira did (elastic/integrations#18138). ``fault(n, request)`` may
    replace the answer to the n-th request (1-based).
    """

    def __init__(
        self,
        entities: list[dict[str, Any]],
        *,
        cursor_style: str = "string",
        fault: Fault | None = None,
    ) -> None:
        rows = []
        for seq, entity in enumerate(entities):
            when = datetime.fromisoformat(entity["timestamp"].replace("Z", "+00:00"))
            rows.append((int(when.timestamp() * 1000), seq, entity))
        self.rows = sorted(rows, key=lambda r: (r[0], r[1]), reverse=True)
        self.cursor_style = cursor_style
        self.fault = fault
        self.requests: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        """A transport that answers from this server."""
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fault is not None:
            replaced = self.fault(len(self.requests), request)
            if replaced is not None:
                return replaced
        params = request.url.params
        try:
            low = _parse_bound(params.get("from"))
            high = _parse_bound(params.get("to"))
        except ValueError:
            return httpx.Response(200, json={"entities": [], "pagingInfo": {}})
        return httpx.Response(200, content=orjson.dumps(self.page(params, low, high)))

    def page(
        self, params: httpx.QueryParams, low: datetime | None, high: datetime | None
    ) -> dict[str, Any]:
        limit = int(params.get("limit", "200"))
        lo = int(low.timestamp() * 1000) if low else None
        hi = int(high.timestamp() * 1000) if high else None
        after = None
        if params.get("pageCursor"):
            ms, seq = params["pageCursor"].split(",")
            after = (int(ms), int(seq))
        rows = [
            r
            for r in self.rows
            if (lo is None or r[0] >= lo)
            and (hi is None or r[0] <= hi)
            and (after is None or (r[0], r[1]) < after)
        ]
        chunk = rows[:limit]
        paging: dict[str, Any] = {"size": len(chunk)}
        if len(rows) <= limit:
            paging["lastPage"] = True
        else:
            cursor = f"{chunk[-1][0]},{chunk[-1][1]}"
            paging["lastPage"] = False
            paging["nextPageCursor"] = (
                {"cursor": cursor} if self.cursor_style == "object" else cursor
            )
        return {"entities": [r[2] for r in chunk], "pagingInfo": paging}


def cloud_item(
    n: int, processed: datetime, action: str = "user_login"
) -> dict[str, Any]:
    """One org audit event with a distinct id."""
    return {
        "type": "events",
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "attributes": {
            "time": iso_ms(processed - timedelta(seconds=1)),
            "processedAt": iso_ms(processed),
            "action": action,
            "actor": {
                "id": f"712020:{n}",
                "name": f"User {n}",
                "email": f"u{n}@x.test",
            },
            "location": {"ip": "198.51.100.7"},
        },
        "message": {"content": "test", "format": "simple"},
    }


class EventsStreamServer:
    """The org ``/events-stream`` endpoint over a growing list of events.

    Ascending by ``processedAt``; ``from`` in epoch ms, inclusive; the cursor is
    ``"c<index>"`` (the index of the next event); the last page has
    ``meta.next: null``. Cursors stay valid, so a cursor kept after an empty
    last page returns events added later.
    """

    def __init__(self, items: list[dict[str, Any]], *, fault: Fault | None = None):
        self.items = items
        self.fault = fault
        self.requests: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        """A transport that answers from this server."""
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fault is not None:
            replaced = self.fault(len(self.requests), request)
            if replaced is not None:
                return replaced
        params = request.url.params
        limit = int(params.get("limit", "200"))
        if "cursor" in params:
            cursor = params["cursor"]
            if not cursor.startswith("c"):
                return httpx.Response(400, json={"errors": [{"title": "bad cursor"}]})
            start = int(cursor[1:])
        else:
            start = self._first_from(int(params.get("from", "0")))
        chunk = self.items[start : start + limit]
        end = start + len(chunk)
        more = end < len(self.items)
        body = {
            "data": chunk,
            "meta": {"next": f"c{end}" if more else None, "page_size": limit},
            "links": {},
        }
        return httpx.Response(200, content=orjson.dumps(body))

    def _first_from(self, from_ms: int) -> int:
        for index, item in enumerate(self.items):
            processed = item["attributes"]["processedAt"]
            when = datetime.fromisoformat(processed.replace("Z", "+00:00"))
            if int(when.timestamp() * 1000) >= from_ms:
                return index
        return len(self.items)


class SlowStream(httpx.AsyncByteStream):
    """A body that never ends: one byte every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"entities": ['
        while True:
            await asyncio.sleep(self.interval)
            yield b" "


async def collect(
    batches: AsyncIterator[SourceBatch], limit: int = 10_000
) -> list[SourceBatch]:
    """Every batch of a pass (at most ``limit``)."""
    out = []
    async for batch in batches:
        out.append(batch)
        if len(out) >= limit:
            break
    return out


def fresh_events(
    batches: list[SourceBatch], seen: set[str] | None = None
) -> list[AuditEvent]:
    """Events a pipeline would deliver, in order, after its dedupe against
    ``seen`` (which gains their ids).
    """
    seen = set() if seen is None else seen
    out = []
    for batch in batches:
        for event in batch.events:
            if event.id not in seen:
                seen.add(event.id)
                out.append(event)
    return out


def delivered(batches: list[SourceBatch], seen: set[str] | None = None) -> list[str]:
    """Ids a pipeline would deliver, after its dedupe against ``seen``."""
    return [event.id for event in fresh_events(batches, seen)]


def assert_ascending(events: list[AuditEvent]) -> None:
    """The events come oldest first."""
    times = [event.time for event in events]
    assert times == sorted(times)


def events_of(batches: list[SourceBatch]) -> list[AuditEvent]:
    """All audit events of the batches, in order."""
    return [event for batch in batches for event in batch.events]

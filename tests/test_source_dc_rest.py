"""The DC auditing REST source against an in-memory server that follows the API."""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.sources.dc_rest import (
    CycleCounts,
    DcRestSettings,
    DcRestSource,
    Gathered,
    SliceRead,
)
from collector.sources.http_common import (
    PageError,
    PageRequest,
    TokenBucket,
    _ssl_context,
    backoff_delay,
    get_json_page,
    make_client,
    parse_retry_after,
)
from tests.conftest import SAMPLES
from tests.fixtures_http import (
    DcAuditServer,
    FakeClock,
    Fault,
    SlowStream,
    assert_ascending,
    collect,
    dc_entity,
    delivered,
    events_of,
    fresh_events,
)

NOW = datetime(2026, 5, 19, 12, 0, 0, tzinfo=UTC)
SECRET = "s3cr3t-token-value"


def make_settings(**overrides: Any) -> DcRestSettings:
    """Settings for a source named ``dc``, with test-friendly defaults."""
    data: dict[str, Any] = {
        "kind": "dc_rest",
        "name": "dc",
        "base_url": "http://bitbucket.test:7990",
        "auth": {"username": "collector", "password": SECRET},
        "limit": 50,
        "max_page_retries": 3,
        "settle_lag": 0,
    }
    data.update(overrides)
    return DcRestSettings.model_validate(data)


def make_source(
    server: DcAuditServer | httpx.MockTransport,
    metrics: Metrics,
    clock: FakeClock | None = None,
    **overrides: Any,
) -> DcRestSource:
    """A source reading from ``server`` on a fake clock."""
    transport = server.transport() if isinstance(server, DcAuditServer) else server
    return DcRestSource(
        make_settings(**overrides),
        metrics=metrics,
        transport=transport,
        clock=clock or FakeClock(NOW),
        rng=random.Random(7),
    )


def spread(count: int, *, same_ms_every: int = 0) -> list[dict[str, Any]]:
    """``count`` entities over the last two hours, with optional same-ms bursts."""
    entities = []
    for n in range(count):
        step = n // same_ms_every if same_ms_every else n
        when = NOW - timedelta(hours=2) + timedelta(milliseconds=step * 4_000)
        entities.append(dc_entity(when, n))
    return entities


def over_day(count: int, *, seed: int) -> list[dict[str, Any]]:
    """``count`` entities at random times over the last day, in random order,
    a fifth of them sharing a millisecond with the one before.
    """
    rng = random.Random(seed)
    entities = []
    when = NOW
    for n in range(count):
        if n == 0 or rng.random() > 0.2:
            when = NOW - timedelta(milliseconds=rng.randrange(1, 86_400_000))
        entities.append(dc_entity(when, n))
    rng.shuffle(entities)
    return entities


def spy_on_slices(
    source: DcRestSource, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, bool]]:
    """Record (events held, overflowed) for every slice the source reads."""
    held: list[tuple[int, bool]] = []
    gather = source._gather

    async def spy(read: SliceRead, counts: CycleCounts, *, follow: bool) -> Gathered:
        gathered = await gather(read, counts, follow=follow)
        held.append((len(gathered.events), gathered.overflow))
        return gathered

    monkeypatch.setattr(source, "_gather", spy)
    return held


def once(match: Callable[[httpx.Request], bool], body: bytes) -> Fault:
    """A fault answering ``body`` to the first request ``match`` accepts."""
    used: list[bool] = []

    def fault(_n: int, request: httpx.Request) -> httpx.Response | None:
        if used or not match(request):
            return None
        used.append(True)
        return httpx.Response(200, content=body)

    return fault


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample value from the registry (0 when absent)."""
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_reads_every_entity_once_across_pages(metrics: Metrics) -> None:
    """A full pass over 1,000 entities with same-ms bursts delivers each once."""
    entities = spread(1000, same_ms_every=3)
    server = DcAuditServer(entities)
    source = make_source(server, metrics)

    batches = await collect(source.batches(None, follow=False))
    await source.aclose()

    ids = delivered(batches)
    assert len(ids) == 1000
    assert len(ids) == len(events_of(batches))
    assert batches[-1].caught_up
    assert batches[-1].checkpoint["cycle"] is None
    assert all(b.checkpoint["cycle"] is not None for b in batches[:-1])


async def test_backfill_is_delivered_oldest_first(metrics: Metrics) -> None:
    """A day read in hour slices arrives in ascending time, each event once."""
    entities = over_day(900, seed=1)
    server = DcAuditServer(entities)
    source = make_source(server, metrics, batch_size=16)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    events = events_of(batches)
    assert_ascending(events)
    assert len(events) == len(delivered(batches)) == 900
    assert max(len(b.events) for b in batches) == 16
    server_key = {
        e["affectedObjects"][0]["id"]: (ms, seq) for ms, seq, e in server.rows
    }
    keys = [server_key[e.raw["affectedObjects"][0]["id"]] for e in events]
    assert keys == sorted(keys)
    summary = next(e for e in logs if e["event"] == "poll.completed")
    assert summary["slices"] == 24 and summary["fetched"] == 900


async def test_crowded_slice_is_split_in_bounded_halves(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice over max_slice_events is read again as halves; none grows past it."""
    entities: list[Any] = [
        dc_entity(NOW - timedelta(seconds=n * 0.9), n) for n in range(1001)
    ]
    entities[501] = {**entities[501], "type": "not an object"}
    source = make_source(DcAuditServer(entities), metrics, max_slice_events=150)
    held = spy_on_slices(source, monkeypatch)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert_ascending(events_of(batches))
    assert len(delivered(batches)) == 1000 == len(events_of(batches))
    kept = [size for size, overflow in held if not overflow]
    assert max(size for size, _o in held) <= 150 + 50
    assert max(kept) <= 150 and sum(kept) >= 1000
    splits = [e for e in logs if e["event"] == "source.slice_split"]
    assert len(splits) >= 7
    assert metric(metrics, "bbaudit_source_slice_splits_total", source="dc") == len(
        splits
    )
    assert not [e for e in logs if e["event"] == "source.slice_unordered"]
    summary = next(e for e in logs if e["event"] == "poll.completed")
    assert summary["rejected"] == sum(b.rejected for b in batches) == 1
    assert summary["fetched"] == 1000 and summary["splits"] == len(splits)


async def test_checkpoint_at_cycle_end_finishes_the_cycle(metrics: Metrics) -> None:
    """A checkpoint whose cycle has nothing left ends it and reads a fresh one."""
    checkpoint = {
        "v": 2,
        "last_ts": "2026-05-19T11:00:00.000Z",
        "cycle": {
            "lower": "2026-05-19T11:30:00.000Z",
            "to": "2026-05-19T11:30:00.000Z",
        },
    }
    source = make_source(DcAuditServer(spread(10)), metrics)

    batches = await collect(source.batches(checkpoint, follow=False))

    assert [b.caught_up for b in batches] == [True, True]
    assert batches[-1].checkpoint["cycle"] is None


async def test_same_second_flood_is_delivered_unsorted_with_warning(
    metrics: Metrics,
) -> None:
    """A flood inside the minimum slice is delivered as read, with a warning."""
    flood = NOW - timedelta(minutes=30)
    entities = [
        dc_entity(flood + timedelta(milliseconds=n % 900), n) for n in range(400)
    ]
    entities += [
        dc_entity(flood - timedelta(minutes=5, seconds=n), 500 + n) for n in range(30)
    ]
    source = make_source(DcAuditServer(entities), metrics, max_slice_events=100)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 430
    warned = [e for e in logs if e["event"] == "source.slice_unordered"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    before = [e for e in events_of(batches) if e.time < flood]
    assert_ascending(before)
    assert events_of(batches)[:30] == before
    assert batches[-1].caught_up


async def test_bounds_carry_explicit_utc_offset(metrics: Metrics) -> None:
    """Every request sends from/to with a Z offset, ms precision, and the limit."""
    server = DcAuditServer(spread(120))
    source = make_source(server, metrics)

    await collect(source.batches(None, follow=False))

    for request in server.requests:
        params = request.url.params
        assert params["from"].endswith("Z") and params["to"].endswith("Z")
        assert len(params["from"]) == len("2026-05-19T12:00:00.000Z")
        assert params["limit"] == "50"
    assert server.requests[0].url.params["from"] == "2026-05-18T12:00:00.000Z"
    assert server.requests[0].url.params["to"] == "2026-05-18T13:00:00.000Z"
    assert server.requests[-1].url.params["to"] == "2026-05-19T12:00:00.000Z"


async def test_object_cursor_is_followed(metrics: Metrics) -> None:
    """A nextPageCursor sent as {"cursor": ...} pages like a string one."""
    server = DcAuditServer(spread(170), cursor_style="object")
    source = make_source(server, metrics)

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 170
    paged = [r for r in server.requests if "pageCursor" in r.url.params]
    assert paged and paged[0].url.params["pageCursor"].count(",") == 1


async def test_elastic_sample_pages_with_string_cursor(metrics: Metrics) -> None:
    """The two-page sample response is read whole through its string cursor."""
    page1 = (SAMPLES / "elastic_bitbucket_dc_rest_api_mock_page1.json").read_bytes()
    page2 = (
        SAMPLES / "elastic_bitbucket_dc_rest_api_mock_page2_last.json"
    ).read_bytes()
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        cursor = request.url.params.get("pageCursor")
        return httpx.Response(200, content=page2 if cursor else page1)

    clock = FakeClock(datetime(2021, 11, 28, tzinfo=UTC))
    source = make_source(httpx.MockTransport(handle), metrics, clock, lookback="2d")

    batches = await collect(source.batches(None, follow=False))

    events = events_of(batches)
    assert len(events) == 2 + len(orjson.loads(page2)["entities"])
    assert sent[1].url.params["pageCursor"] == "1637539714166,47"
    assert sent[1].url.params["from"] == sent[0].url.params["from"]
    assert {e.platform for e in events} == {"dc"}


async def test_restart_from_any_checkpoint_loses_nothing(metrics: Metrics) -> None:
    """A new source started from any batch's checkpoint delivers the rest."""
    entities = over_day(600, seed=3)
    overrides: dict[str, Any] = {"batch_size": 40, "slice": "3h"}
    first = make_source(DcAuditServer(entities), metrics, **overrides)
    batches = await collect(first.batches(None, follow=False))
    moved = {str(b.checkpoint) for b in batches}
    assert len(delivered(batches)) == 600 and len(moved) > 8

    for cut in range(len(batches)):
        seen: set[str] = set()
        delivered(batches[: cut + 1], seen)
        again = make_source(DcAuditServer(entities), Metrics(), **overrides)
        rest = await collect(again.batches(batches[cut].checkpoint, follow=False))
        fresh = fresh_events(rest, seen)

        assert len(seen) == 600, f"restart after batch {cut}"
        assert_ascending(fresh)
        assert len(events_of(rest)) - len(fresh) <= 600 // 8 + 40


async def test_version_1_checkpoint_resumes_without_loss(metrics: Metrics) -> None:
    """A mid-cycle checkpoint of the newest-first version re-reads its cycle."""
    entities = spread(200)
    checkpoint = {
        "v": 1,
        "last_ts": None,
        "cycle": {
            "lower": "2026-05-18T12:00:00.000Z",
            "to": "2026-05-19T12:00:00.000Z",
            "upper": "2026-05-19T12:00:00.000Z",
            "floor": "2026-05-18T12:00:00.000Z",
            "cursor": "1779184000000,150",
            "newest": "2026-05-19T10:13:16.000Z",
            "oldest": "2026-05-19T10:10:00.000Z",
            "step_ms": None,
        },
    }
    source = make_source(DcAuditServer(entities), metrics)

    batches = await collect(source.batches(checkpoint, follow=False))

    assert len(delivered(batches)) == 200
    assert batches[-1].checkpoint["v"] == 2


async def test_retry_after_seconds_and_date_are_honoured(metrics: Metrics) -> None:
    """A 429 waits exactly Retry-After, given as seconds or as an HTTP date."""
    answers = {
        1: httpx.Response(429, headers={"Retry-After": "7"}),
        2: httpx.Response(
            429, headers={"Retry-After": "Tue, 19 May 2026 12:00:20 GMT"}
        ),
    }
    server = DcAuditServer(spread(10), fault=lambda n, _r: answers.get(n))
    clock = FakeClock(NOW)
    source = make_source(server, metrics, clock, max_page_retries=5)

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 10
    assert clock.sleeps[0] == 7
    assert clock.sleeps[1] == pytest.approx(13, abs=0.01)
    assert (
        metric(
            metrics,
            "bbaudit_source_page_errors_total",
            source="dc",
            reason="rate_limited",
        )
        == 2
    )


async def test_transient_5xx_backs_off_with_jitter(metrics: Metrics) -> None:
    """Two 503s are retried after bounded full-jitter waits; nothing is lost."""
    answers = {1: httpx.Response(503), 2: httpx.Response(502)}
    server = DcAuditServer(spread(60), fault=lambda n, _r: answers.get(n))
    clock = FakeClock(NOW)
    source = make_source(server, metrics, clock)

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 60
    assert 0 <= clock.sleeps[0] <= 1 and 0 <= clock.sleeps[1] <= 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"entities": [', "malformed_json"),
        (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
        (b'{"entities": ["\xff\xfe"]}', "not_utf8"),
        (b'{"entities": {"a": 1}}', "wrong_shape"),
        (b" " * (2 * 1024 * 1024 + 10), "too_large"),
    ],
)
async def test_bad_body_once_is_retried(
    metrics: Metrics, body: bytes, reason: str
) -> None:
    """One bad body is counted under its reason and the retry reads the page."""
    server = DcAuditServer(
        spread(80), fault=once(lambda r: "pageCursor" in r.url.params, body)
    )
    source = make_source(server, metrics, max_response_bytes="2MiB")

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 80
    assert (
        metric(metrics, "bbaudit_source_page_errors_total", source="dc", reason=reason)
        == 1
    )
    failed = [e for e in logs if e["event"] == "source.page_failed"]
    assert failed[0]["page"] == 2 and failed[0]["cursor"]


async def test_poison_window_is_narrowed_and_skipped(metrics: Metrics) -> None:
    """A window that always fails is narrowed to a small gap; the rest flows."""
    entities = spread(300)
    bad_ms = datetime.fromisoformat(entities[150]["timestamp"].replace("Z", "+00:00"))

    def poison(_n: int, request: httpx.Request) -> httpx.Response | None:
        low = datetime.fromisoformat(request.url.params["from"].replace("Z", "+00:00"))
        high = datetime.fromisoformat(request.url.params["to"].replace("Z", "+00:00"))
        return httpx.Response(500) if low <= bad_ms <= high else None

    server = DcAuditServer(entities, fault=poison)
    source = make_source(server, metrics, max_page_retries=2)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    ids = delivered(batches)
    assert len(ids) == 299
    gaps = [e for e in logs if e["event"] == "source.window_skipped"]
    assert len(gaps) == 1
    assert any(
        e["event"] == "source.page_skipped" and e["log_level"] == "error" for e in logs
    )
    assert 0 < metric(metrics, "bbaudit_source_gap_seconds_total", source="dc") <= 1
    assert len(server.requests) < 200
    assert batches[-1].caught_up


async def test_failure_mid_pagination_keeps_earlier_pages(metrics: Metrics) -> None:
    """A cursor page failing for good narrows below the last read event."""
    entities = spread(200)

    def fail_third(n: int, request: httpx.Request) -> httpx.Response | None:
        cursor = request.url.params.get("pageCursor", "")
        return httpx.Response(500) if cursor.endswith(",100") else None

    server = DcAuditServer(entities, fault=fail_third)
    source = make_source(server, metrics, max_page_retries=2)

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 200
    assert metric(metrics, "bbaudit_source_pages_skipped_total", source="dc") >= 1


async def test_cursor_loop_and_empty_page_stop_paging(metrics: Metrics) -> None:
    """A repeated cursor or an empty page without lastPage ends the query."""
    page = {
        "entities": [dc_entity(NOW - timedelta(minutes=1), 1)],
        "pagingInfo": {"lastPage": False, "nextPageCursor": "5,5"},
    }
    transport = httpx.MockTransport(
        lambda _r: httpx.Response(200, content=orjson.dumps(page))
    )
    source = make_source(transport, metrics)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False), limit=50)

    assert batches[-1].caught_up
    assert len(delivered(batches)) == 1
    stops = [e for e in logs if e["event"] == "source.paging_stopped"]
    assert stops[0]["reason"] == "cursor_repeated"

    empty = {"entities": [], "pagingInfo": {"lastPage": False, "nextPageCursor": "1,1"}}
    transport = httpx.MockTransport(
        lambda _r: httpx.Response(200, content=orjson.dumps(empty))
    )
    source = make_source(transport, Metrics())
    batches = await collect(source.batches(None, follow=False), limit=50)
    assert batches[-1].caught_up and len(batches) == 1


async def test_slow_loris_hits_the_total_deadline(metrics: Metrics) -> None:
    """A body that trickles forever fails on the total read deadline."""
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, stream=SlowStream())
        return DcAuditServer(spread(5)).handle(request)

    source = make_source(httpx.MockTransport(handle), metrics, request_deadline=0.3)

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 5
    assert (
        metric(
            metrics, "bbaudit_source_page_errors_total", source="dc", reason="deadline"
        )
        == 1
    )


async def test_bad_entity_is_rejected_with_position(metrics: Metrics) -> None:
    """An entity that cannot be normalized is logged with its place and counted."""
    entities: list[Any] = spread(10)
    broken = dict(entities[4])
    broken["timestamp"] = entities[4]["timestamp"]
    broken["type"] = "not an object"
    entities[4] = broken
    server = DcAuditServer(entities)
    source = make_source(server, metrics)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 9
    assert sum(b.rejected for b in batches) == 1
    rejected = [e for e in logs if e["event"] == "source.record_rejected"]
    assert rejected[0]["position"].startswith("page 1 index 5")
    assert (
        metric(
            metrics,
            "bbaudit_events_rejected_total",
            source="dc",
            reason="invalid_record",
        )
        == 1
    )


async def test_own_audit_searches_are_filtered(metrics: Metrics) -> None:
    """Audit-search events by the collector account are dropped; others stay."""
    search_key = "atlassian.audit.event.action.audit.search"
    entities = spread(4)
    entities.append(
        dc_entity(
            NOW - timedelta(minutes=5),
            90,
            author="collector",
            key=search_key,
            action="Audit Log search performed",
        )
    )
    entities.append(
        dc_entity(
            NOW - timedelta(minutes=4),
            91,
            author="mallory",
            key=search_key,
            action="Audit Log search performed",
        )
    )
    source = make_source(DcAuditServer(entities), metrics)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    actors = [e.actor.name for e in events_of(batches) if e.action == "audit.searched"]
    assert actors == ["mallory"]
    assert metric(metrics, "bbaudit_events_filtered_total", source="dc") == 1
    summary = next(e for e in logs if e["event"] == "poll.completed")
    assert summary["filtered"] == 1 and summary["fetched"] == 5


async def test_auth_failure_is_logged_without_secret(metrics: Metrics) -> None:
    """A 401 ends a single pass with a clear log line that carries no secret."""
    transport = httpx.MockTransport(lambda _r: httpx.Response(401))
    source = make_source(transport, metrics, auth={"token": SECRET})

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert batches[-1].caught_up and batches[-1].checkpoint is None
    auth = [e for e in logs if e["event"] == "source.auth_failed"]
    assert auth[0]["status"] == 401
    assert SECRET not in repr(logs)


@pytest.mark.parametrize("status", [302, 400, 404, 407])
async def test_redirect_or_client_error_waits_instead_of_skipping(
    metrics: Metrics, status: int
) -> None:
    """A 3xx/4xx on every page ends the pass without skipping windows: one
    request, a clear log line, and no checkpoint that writes data off."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, headers={"location": "https://sso.example"})

    source = make_source(httpx.MockTransport(answer), metrics)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert len(requests) == 1
    assert batches[-1].checkpoint is None
    refused = [e for e in logs if e["event"] == "source.request_refused"]
    assert refused and refused[0]["status"] == status
    assert not [e for e in logs if e["event"] == "source.page_skipped"]


async def test_timeouts_are_waited_out_not_skipped(metrics: Metrics) -> None:
    """A page that times out for a while (an overloaded server) is retried until
    it answers; nothing is skipped and every event arrives."""
    entities = spread(30)

    def slow_at_first(n: int, request: httpx.Request) -> httpx.Response | None:
        if n <= 12:
            raise httpx.ReadTimeout("server overloaded", request=request)
        return None

    server = DcAuditServer(entities, fault=slow_at_first)
    source = make_source(server, metrics, max_page_retries=2)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    delivered = {e.id for b in batches for e in b.events}
    assert len(delivered) == 30
    assert not [e for e in logs if e["event"] == "source.page_skipped"]


async def test_bearer_and_basic_auth_headers(metrics: Metrics) -> None:
    """A token goes out as Bearer, a username and password as Basic."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(
            200, json={"entities": [], "pagingInfo": {"lastPage": True}}
        )

    for auth in ({"token": SECRET}, {"username": "u", "password": SECRET}):
        source = make_source(httpx.MockTransport(handle), metrics, auth=auth)
        await collect(source.batches(None, follow=False))

    assert seen[0] == f"Bearer {SECRET}"
    assert seen[-1].startswith("Basic ")
    assert SECRET not in repr(make_settings())


async def test_follow_moves_the_window_with_overlap(metrics: Metrics) -> None:
    """In follow mode the next cycle starts at the newest event minus overlap."""
    entities = spread(30)
    server = DcAuditServer(entities)
    clock = FakeClock(NOW)
    source = make_source(
        server, metrics, clock, overlap="10m", settle_lag="30s", poll_interval="60s"
    )

    cycles = 0
    async for batch in source.batches(None, follow=True):
        if batch.caught_up:
            cycles += 1
        if cycles == 2:
            break

    second = server.requests[-1].url.params
    newest = NOW - timedelta(hours=2) + timedelta(milliseconds=29 * 4000)
    expected_from = max(newest, NOW - timedelta(seconds=30) - timedelta(minutes=10))
    assert second["from"] == (expected_from - timedelta(minutes=10)).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    assert second["to"] == "2026-05-19T12:00:30.000Z"
    assert clock.sleeps == [60.0]
    assert (
        metric(metrics, "bbaudit_last_poll_success_timestamp_seconds", source="dc") > 0
    )


def test_settings_validate_auth_and_limits() -> None:
    """Settings refuse a missing auth scheme, a bad URL and nextPageLink following."""
    with pytest.raises(ValueError, match="either username and password"):
        make_settings(auth={"username": "u"})
    with pytest.raises(ValueError, match="base_url"):
        make_settings(base_url="ftp://x")
    with pytest.raises(ValueError):
        make_settings(follow_next_page_link=True)
    settings = make_settings()
    assert settings.verify is True
    assert settings.own_account == "collector"
    assert settings.max_response_bytes == 32 * 1024 * 1024


def test_client_verifies_tls_1_2_by_default() -> None:
    """The client verifies certificates and refuses anything below TLS 1.2."""
    context = _ssl_context(True, None)
    insecure = _ssl_context(False, None)

    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert insecure.verify_mode == ssl.CERT_NONE
    assert insecure.minimum_version == ssl.TLSVersion.TLSv1_2


def test_retry_after_forms() -> None:
    """Retry-After reads seconds and HTTP dates, clamps, and ignores junk."""
    assert parse_retry_after("12", NOW) == 12
    assert parse_retry_after("Tue, 19 May 2026 12:01:00 GMT", NOW) == 60
    assert parse_retry_after("Tue, 19 May 2026 11:00:00 GMT", NOW) == 0
    assert parse_retry_after("999999", NOW) == 3600
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("nan", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_full_jitter_stays_under_the_cap() -> None:
    """Backoff is uniform under min(cap, base * 2**attempt)."""
    rng = random.Random(1)
    delays = [backoff_delay(a, base_s=1, cap_s=10, rng=rng) for a in range(40)]

    assert all(0 <= d <= min(10, 2**a) for a, d in enumerate(delays))
    assert max(delays) > 1


async def test_token_bucket_spaces_requests() -> None:
    """After the burst, each token waits 1/rate seconds on the clock."""
    clock = FakeClock(NOW)
    bucket = TokenBucket(0.5, 2, clock)

    waits = [await bucket.acquire() for _ in range(5)]

    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([2.0, 2.0, 2.0])


class _LoopbackHandler(BaseHTTPRequestHandler):
    """Serves a trickling body on /slow and an oversized one on /huge."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.path.startswith("/slow"):
                self.wfile.write(b'{"entities": [')
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.02)
            else:
                chunk = b" " * 65536
                for _ in range(64):
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture
def loopback() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1, stopped after the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoopbackHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_real_socket_slow_loris_and_size_cap(loopback: str) -> None:
    """Over a real socket a trickle hits the deadline and a 4 MiB body the cap."""
    client = make_client(base_url=loopback)
    clock = FakeClock(NOW)
    try:
        with pytest.raises(PageError) as slow:
            await get_json_page(client, PageRequest("/slow", {}, deadline_s=0.5), clock)
        with pytest.raises(PageError) as huge:
            await get_json_page(
                client, PageRequest("/huge", {}, max_bytes=1024 * 1024), clock
            )
    finally:
        await client.aclose()

    assert slow.value.reason == "deadline"
    assert huge.value.reason == "too_large"

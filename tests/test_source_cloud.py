"""The org events-stream source against an in-memory events-stream server."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from collector.config import parse_config
from collector.metrics import Metrics
from collector.sources.cloud import CloudOrgSettings, CloudOrgSource
from tests.conftest import SAMPLES
from tests.fixtures_http import (
    EventsStreamServer,
    FakeClock,
    cloud_item,
    collect,
    delivered,
    events_of,
)

NOW = datetime(2026, 5, 19, 12, 0, 0, tzinfo=UTC)
API_KEY = "org-api-key-do-not-log"
ORG = "00000000-0000-0000-0000-000000000000"


def make_source(
    transport: httpx.MockTransport,
    metrics: Metrics,
    clock: FakeClock | None = None,
    **overrides: Any,
) -> CloudOrgSource:
    """A ``cloud_org`` source named ``cloud`` on a fake clock."""
    data: dict[str, Any] = {
        "kind": "cloud_org",
        "name": "cloud",
        "org_id": ORG,
        "api_key": API_KEY,
        "limit": 25,
        "max_page_retries": 3,
    }
    data.update(overrides)
    return CloudOrgSource(
        CloudOrgSettings.model_validate(data),
        metrics=metrics,
        transport=transport,
        clock=clock or FakeClock(NOW),
        rng=random.Random(3),
    )


def stream(count: int) -> list[dict[str, Any]]:
    """``count`` events processed one a second, ending a minute before NOW."""
    start = NOW - timedelta(seconds=count + 60)
    return [cloud_item(n, start + timedelta(seconds=n)) for n in range(count)]


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample value from the registry (0 when absent)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_pages_through_the_stream(metrics: Metrics) -> None:
    """Every event is read once; the checkpoint holds processedAt in ms."""
    server = EventsStreamServer(stream(110))
    source = make_source(server.transport(), metrics)

    batches = await collect(source.batches(None, follow=False))
    await source.aclose()

    assert len(delivered(batches)) == 110
    assert batches[-1].caught_up
    last = server.items[-1]["attributes"]["processedAt"]
    last_ms = int(
        datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() * 1000
    )
    assert batches[-1].checkpoint["processed_at_ms"] == last_ms
    first = server.requests[0]
    assert first.url.path == f"/admin/v1/orgs/{ORG}/events-stream"
    assert first.headers["authorization"] == f"Bearer {API_KEY}"
    assert first.url.params["sortOrder"] == "asc"
    assert int(first.url.params["from"]) == int((NOW.timestamp() - 86400) * 1000)
    assert server.requests[1].url.params["cursor"] == "c25"


async def test_elastic_sample_pages(metrics: Metrics) -> None:
    """The public sample pages are followed through meta.next to the terminal page."""
    pages = {
        None: "page1",
        "cursor-page-2": "page2",
        "cursor-page-3": "terminal_page",
    }

    def handle(request: httpx.Request) -> httpx.Response:
        name = pages[request.url.params.get("cursor")]
        path = SAMPLES / f"elastic_atlassian_cloud_events_stream_mock_{name}.json"
        return httpx.Response(200, content=path.read_bytes())

    source = make_source(httpx.MockTransport(handle), metrics)

    batches = await collect(source.batches(None, follow=False))

    assert events_of(batches)[0].raw_action == "user_login"
    assert len(events_of(batches)) == 4
    assert batches[-1].checkpoint["cursor"] == "cursor-page-3"


async def test_restart_resumes_at_cursor_without_loss(metrics: Metrics) -> None:
    """A new source from a checkpoint after two pages reads only the rest."""
    items = stream(100)
    first = make_source(EventsStreamServer(items).transport(), metrics)
    partial = []
    async for batch in first.batches(None, follow=False):
        partial.append(batch)
        if len(partial) == 2:
            break
    checkpoint = partial[-1].checkpoint
    assert checkpoint["cursor"] == "c50"

    seen: set[str] = set()
    before = delivered(partial, seen)
    server = EventsStreamServer(items)
    second = make_source(server.transport(), Metrics())
    after = delivered(await collect(second.batches(checkpoint, follow=False)), seen)

    assert len(before) == 50 and len(after) == 50 and len(seen) == 100
    assert server.requests[0].url.params["cursor"] == "c50"


async def test_rejected_cursor_falls_back_to_processed_at(metrics: Metrics) -> None:
    """A 400 on a stored cursor restarts from processedAt minus overlap."""
    items = stream(30)
    server = EventsStreamServer(items)
    processed = items[19]["attributes"]["processedAt"]
    ms = int(
        datetime.fromisoformat(processed.replace("Z", "+00:00")).timestamp() * 1000
    )
    source = make_source(server.transport(), metrics, overlap="5s")

    with capture_logs() as logs:
        batches = await collect(
            source.batches({"cursor": "expired", "processed_at_ms": ms}, follow=False)
        )

    assert any(e["event"] == "source.cursor_rejected" for e in logs)
    assert server.requests[1].url.params["from"] == str(ms - 5000)
    assert len(delivered(batches)) == 16  # 14..29: `from` is inclusive


async def test_new_events_after_last_page(metrics: Metrics) -> None:
    """After a non-empty last page the next poll goes by processedAt, not cursor."""
    items = stream(10)
    server = EventsStreamServer(items)
    clock = FakeClock(NOW)
    source = make_source(server.transport(), metrics, clock, poll_interval="60s")

    ids: list[str] = []
    seen: set[str] = set()
    polls = 0
    async for batch in source.batches(None, follow=True):
        ids += delivered([batch], seen)
        if batch.caught_up:
            polls += 1
            server.items.append(cloud_item(100 + polls, clock.now()))
        if polls == 3:
            break

    assert len(ids) == 12
    assert "from" in server.requests[1].url.params
    assert clock.sleeps.count(60.0) == 2


async def test_rate_limit_retry_after_and_token_bucket(metrics: Metrics) -> None:
    """A 429 waits Retry-After; the client bucket spaces requests at the rate."""
    server = EventsStreamServer(
        stream(100),
        fault=lambda n, _r: (
            httpx.Response(429, headers={"Retry-After": "11"}) if n == 2 else None
        ),
    )
    clock = FakeClock(NOW)
    source = make_source(
        server.transport(), metrics, clock, limit=10, burst=2, requests_per_minute=30
    )

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 100
    assert 11.0 in clock.sleeps
    bucket_waits = [s for s in clock.sleeps if s != 11.0]
    assert bucket_waits and all(w <= 2.0 + 1e-9 for w in bucket_waits)
    assert (
        metric(
            metrics,
            "bbaudit_source_page_errors_total",
            source="cloud",
            reason="rate_limited",
        )
        == 1
    )


async def test_auth_failure_message_without_key(metrics: Metrics) -> None:
    """A 401 logs that the key was rejected or expired, never the key itself."""
    source = make_source(httpx.MockTransport(lambda _r: httpx.Response(401)), metrics)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False))

    assert batches[-1].caught_up and batches[-1].checkpoint is None
    auth = next(e for e in logs if e["event"] == "source.auth_failed")
    assert auth["hint"] == "api key rejected or expired"
    assert API_KEY not in repr(logs)


async def test_auth_failure_in_follow_backs_off_and_recovers(metrics: Metrics) -> None:
    """In follow mode a 401 waits auth_backoff and then reads on."""
    server = EventsStreamServer(
        stream(5), fault=lambda n, _r: httpx.Response(401) if n == 1 else None
    )
    clock = FakeClock(NOW)
    source = make_source(server.transport(), metrics, clock, auth_backoff="15m")

    async for batch in source.batches(None, follow=True):
        if batch.caught_up:
            break

    assert clock.sleeps[0] == 900.0
    assert len(server.requests) == 2


async def test_loops_and_bad_items_are_contained(metrics: Metrics) -> None:
    """A repeating cursor stops paging; a broken item is rejected with position."""
    good = cloud_item(1, NOW - timedelta(minutes=1))
    page = {"data": [good, {"id": 5}], "meta": {"next": "same"}}
    transport = httpx.MockTransport(
        lambda _r: httpx.Response(200, content=orjson.dumps(page))
    )
    source = make_source(transport, metrics)

    with capture_logs() as logs:
        batches = await collect(source.batches(None, follow=False), limit=20)

    assert batches[-1].caught_up
    assert len(delivered(batches)) == 1
    assert sum(b.rejected for b in batches) == 2
    stop = next(e for e in logs if e["event"] == "source.paging_stopped")
    assert stop["reason"] == "cursor_repeated"
    bad = next(e for e in logs if e["event"] == "source.record_rejected")
    assert bad["position"].startswith("page 1 index 1")
    assert batches[-1].checkpoint["cursor"] is None


async def test_empty_pages_with_next_are_bounded(metrics: Metrics) -> None:
    """Endless empty pages that still carry a next cursor stop after a few."""
    counter = iter(range(1_000))

    def handle(_r: httpx.Request) -> httpx.Response:
        body = {"data": [], "meta": {"next": f"n{next(counter)}"}}
        return httpx.Response(200, content=orjson.dumps(body))

    source = make_source(httpx.MockTransport(handle), metrics, max_empty_pages=4)

    batches = await collect(source.batches(None, follow=False), limit=100)

    assert len(batches) == 4 and batches[-1].caught_up


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"{", "malformed_json"), (b"[" * 5000 + b"]" * 5000, "too_deep")],
)
async def test_bad_body_is_retried(metrics: Metrics, body: bytes, reason: str) -> None:
    """A bad body once is counted and the retry succeeds."""
    server = EventsStreamServer(
        stream(30),
        fault=lambda n, _r: httpx.Response(200, content=body) if n == 1 else None,
    )
    source = make_source(server.transport(), metrics)

    batches = await collect(source.batches(None, follow=False))

    assert len(delivered(batches)) == 30
    assert (
        metric(
            metrics, "bbaudit_source_page_errors_total", source="cloud", reason=reason
        )
        == 1
    )


def test_settings_limits() -> None:
    """limit is capped at 500 and the org id must look like one."""
    base = {"kind": "cloud_org", "name": "c", "org_id": ORG, "api_key": API_KEY}
    with pytest.raises(ValueError):
        CloudOrgSettings.model_validate({**base, "limit": 501})
    with pytest.raises(ValueError):
        CloudOrgSettings.model_validate({**base, "org_id": "../../x"})
    settings = CloudOrgSettings.model_validate(base)
    assert settings.base_url == "https://api.atlassian.com"
    assert settings.requests_per_minute < 50
    assert API_KEY not in repr(settings)


def test_config_loader_reads_secret_files(tmp_path: Path) -> None:
    """Both kinds validate through the config loader with *_file secrets."""
    (tmp_path / "key").write_text(API_KEY + "\n")
    (tmp_path / "pw").write_text("dc-password\n")
    config = {
        "sources": [
            {"kind": "cloud_org", "org_id": ORG, "api_key_file": "key"},
            {
                "kind": "dc_rest",
                "base_url": "https://bitbucket.example.test",
                "auth": {"username": "svc", "password_file": "pw"},
            },
        ]
    }

    app = parse_config(config, base_dir=tmp_path)

    cloud, dc = app.sources
    assert cloud.api_key.get_secret_value() == API_KEY
    assert dc.auth.password.get_secret_value() == "dc-password"
    assert dc.instance_name == "dc_rest-1"

"""The SCIM 2.0 identity enricher against a real SCIM server on loopback."""

from __future__ import annotations

import gzip
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.model import Actor, ActorKind, AuditEvent
from enrichers.scim import ScimEnricher, ScimSettings, scim_user

TOKEN = "scim-test-token-0123456789"
_FILTER = re.compile(r'^(userName|emails\.value) eq "((?:[^"\\]|\\.)*)"$')


def scim_resource(username: str, email: str, active: bool = True) -> dict[str, Any]:
    """A SCIM User resource with the enterprise extension."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": f"id-{username}",
        "userName": username,
        "displayName": username.title(),
        "active": active,
        "title": "Engineer",
        "emails": [
            {"value": f"other-{email}", "primary": False},
            {"value": email, "primary": True},
        ],
        "groups": [{"value": "g1", "display": "engineering"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "R&D",
            "manager": {"value": "m1", "displayName": "Carol"},
        },
    }


@dataclass
class ScimState:
    """What the loopback directory serves and what it has seen."""

    users: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None
    retry_after: str | None = None
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    padding: int = 0  # bytes of filler added to every 200 answer
    gzip_body: bool = False  # send the answer gzip-compressed

    def answer(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """The status and ListResponse body for one ``GET /Users``."""
        self.requests.append(query)
        if self.fail_with is not None:
            return self.fail_with, {"status": str(self.fail_with)}
        users = self.users
        if "filter" in query:
            match = _FILTER.match(query["filter"][0])
            if match is None:
                return 400, {"scimType": "invalidFilter"}
            users = [u for u in users if _has(u, match[1], match[2].lower())]
        start = int(query.get("startIndex", ["1"])[0])
        count = int(query.get("count", ["100"])[0])
        page = users[start - 1 : start - 1 + count]
        return 200, {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": len(users),
            "startIndex": start,
            "itemsPerPage": len(page),
            "Resources": page,
        }


def _has(user: dict[str, Any], attribute: str, value: str) -> bool:
    if attribute == "userName":
        return str(user["userName"]).lower() == value
    return any(e["value"].lower() == value for e in user["emails"])


def _handler(state: ScimState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            state.auth_headers.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = 401, {"detail": "bad token"}
            elif url.path != "/scim/v2/Users":
                status, body = 404, {}
            else:
                status, body = state.answer(parse_qs(url.query))
            if status == 200 and state.padding:
                body["filler"] = " " * state.padding
            payload = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            if state.gzip_body:
                payload = gzip.compress(payload)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(payload)))
            if status == 429 and state.retry_after:
                self.send_header("Retry-After", state.retry_after)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@dataclass
class ScimServer:
    """A running loopback directory."""

    url: str
    state: ScimState


@pytest.fixture
def scim() -> Iterator[ScimServer]:
    """A SCIM server on a free loopback port with three users."""
    state = ScimState(
        users=[
            scim_resource("alice", "alice@example.com"),
            scim_resource("bob", "bob@example.com", active=False),
            scim_resource("carol", "carol@example.com"),
        ]
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield ScimServer(f"http://127.0.0.1:{server.server_port}/scim/v2", state)
    server.shutdown()
    server.server_close()
    thread.join()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(
    name: str | None, email: str | None = None, kind: ActorKind = "human"
) -> AuditEvent:
    """An audit event by one author."""
    return AuditEvent(
        id="e1",
        time=datetime(2026, 5, 1, tzinfo=UTC),
        platform="cloud",
        instance="org",
        source_kind="test",
        action="user.logged_in",
        category="authentication",
        actor=Actor(name=name, email=email, kind=kind),
    )


def enricher_for(
    server: ScimServer, metrics: Metrics, clock: FakeClock | None = None, **extra: Any
) -> ScimEnricher:
    """An enricher pointed at the loopback server."""
    settings = ScimSettings(
        name="okta", url=server.url, token=SecretStr(TOKEN), timeout=2.0, **extra
    )
    if clock is None:
        return ScimEnricher(settings, metrics)
    return ScimEnricher(settings, metrics, clock=clock)


async def test_lookup_by_username_then_cache(
    scim: ScimServer, metrics: Metrics
) -> None:
    """A username lookup fills the identity; the second batch needs no request."""
    enricher = enricher_for(scim, metrics)
    await enricher.start()
    first, second = event("Alice"), event("alice")

    await enricher.enrich([first])
    await enricher.enrich([second])
    await enricher.aclose()

    identity = second.context["identity"]
    assert identity["matched_by"] == "username"
    assert identity["directory"] == "okta"
    assert identity["email"] == "alice@example.com"
    assert identity["department"] == "R&D"
    assert identity["manager"] == "Carol"
    assert identity["groups"] == ["engineering"]
    assert scim.state.requests == [
        {"filter": ['userName eq "alice"'], "startIndex": ["1"], "count": ["2"]}
    ]
    assert scim.state.auth_headers == [f"Bearer {TOKEN}"]


async def test_lookup_by_email_after_username_miss(
    scim: ScimServer, metrics: Metrics
) -> None:
    """A display-name author is found by email and marked inactive as suspended."""
    enricher = enricher_for(scim, metrics)
    ev = event("Bob Li", "BOB@example.com")

    await enricher.enrich([ev])
    await enricher.aclose()

    assert ev.context["identity"]["matched_by"] == "email"
    assert ev.context["identity"]["status"] == "suspended"
    filters = [q["filter"][0] for q in scim.state.requests]
    assert filters == ['userName eq "bob li"', 'emails.value eq "bob@example.com"']


async def test_unmatched_user_is_negatively_cached(
    scim: ScimServer, metrics: Metrics
) -> None:
    """An unknown author is looked up once within the negative TTL, then again."""
    clock = FakeClock()
    enricher = enricher_for(scim, metrics, clock, negative_ttl=600)

    for _ in range(3):
        ev = event("mallory")
        await enricher.enrich([ev, event("mallory")])
    clock.now += 601
    await enricher.enrich([event("mallory")])
    await enricher.aclose()

    assert ev.context["identity"]["matched_by"] is None
    assert len(scim.state.requests) == 2


async def test_non_human_authors_make_no_requests(
    scim: ScimServer, metrics: Metrics
) -> None:
    """System and bot authors are marked non-human without a request."""
    enricher = enricher_for(scim, metrics)
    system, bot = (
        event("System", kind="system"),
        event("access-token-user/1/2", kind="bot"),
    )

    await enricher.enrich([system, bot])
    await enricher.aclose()

    assert system.context["identity"] == {"human": False, "matched_by": None}
    assert bot.context["identity"]["human"] is False
    assert scim.state.requests == []


async def test_preload_pages_through_all_users(
    scim: ScimServer, metrics: Metrics
) -> None:
    """Preload reads every page by startIndex/count; misses then need no request."""
    enricher = enricher_for(scim, metrics, preload=True, page_size=2)

    loaded = await enricher.arefresh()
    known, unknown = event("carol"), event("nobody")
    await enricher.enrich([known, unknown])
    await enricher.aclose()

    assert loaded == 3
    pages = [(q["startIndex"][0], q["count"][0]) for q in scim.state.requests]
    assert pages == [("1", "2"), ("3", "2")]
    assert known.context["identity"]["matched_by"] == "username"
    assert unknown.context["identity"]["matched_by"] is None


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (503, "okta: directory answered HTTP 503"),
        (429, "okta: directory rate limit (HTTP 429)"),
    ],
)
async def test_outage_marks_events_and_fails_fast(
    scim: ScimServer, metrics: Metrics, status: int, reason: str
) -> None:
    """A failing directory marks events; once the breaker opens, no requests go out."""
    scim.state.fail_with = status
    scim.state.retry_after = "120"
    enricher = enricher_for(scim, metrics, failure_threshold=1)

    first = event("alice")
    await enricher.enrich([first])
    seen = len(scim.state.requests)
    later = event("carol")
    await enricher.enrich([later])
    await enricher.aclose()

    assert first.context["enrichment_errors"] == [reason]
    assert later.context["enrichment_errors"] == [
        "okta: directory unavailable (circuit open)"
    ]
    assert len(scim.state.requests) == seen == 1
    errors = metrics.enrichment_errors.labels(enricher="okta")._value.get()
    assert errors == 2


@pytest.mark.parametrize("compressed", [False, True], ids=["declared", "gzip-bomb"])
async def test_oversized_answer_is_refused_not_buffered(
    scim: ScimServer, metrics: Metrics, compressed: bool
) -> None:
    """An answer over max_response_bytes (even one that only inflates past it)
    marks the events and is counted; the enricher keeps working."""
    scim.state.padding = 3 * 1024 * 1024
    scim.state.gzip_body = compressed
    enricher = enricher_for(scim, metrics, max_response_bytes="1MiB")

    big = event("alice")
    await enricher.enrich([big])
    scim.state.padding = 0
    after = event("carol")
    await enricher.enrich([after])
    await enricher.aclose()

    assert big.context["enrichment_errors"][0].startswith(
        "okta: directory answer too large"
    )
    requests = metrics.counter(
        "bbaudit_scim_requests_total", "", ["enricher", "result"]
    )
    assert requests.labels(enricher="okta", result="too_large")._value.get() == 1
    assert after.context["identity"]["username"] == "carol"


async def test_directory_recovers_after_backoff(
    scim: ScimServer, metrics: Metrics
) -> None:
    """After the backoff the next lookup probes and succeeds."""
    clock = FakeClock()
    scim.state.fail_with = 500
    enricher = enricher_for(
        scim, metrics, clock, failure_threshold=2, backoff=30, rate=1000, burst=100
    )

    await enricher.enrich([event("alice")])
    await enricher.enrich([event("carol")])
    scim.state.fail_with = None
    clock.now += 31
    ev = event("alice")
    await enricher.enrich([ev])
    await enricher.aclose()

    assert ev.context["identity"]["matched_by"] == "username"


async def test_bad_token_is_never_logged(scim: ScimServer, metrics: Metrics) -> None:
    """A 401 marks events and no log line carries the token."""
    settings = ScimSettings(
        name="okta", url=scim.url, token=SecretStr("wrong-token-value")
    )
    enricher = ScimEnricher(settings, metrics)

    with capture_logs() as logs:
        ev = event("alice")
        await enricher.enrich([ev])
    await enricher.aclose()

    assert ev.context["enrichment_errors"] == [
        "okta: directory refused the token (HTTP 401)"
    ]
    assert "wrong-token-value" not in repr(logs)
    assert "wrong-token-value" not in repr(settings)


async def test_unreachable_directory_does_not_raise(metrics: Metrics) -> None:
    """A closed port is a marked event, not an exception."""
    settings = ScimSettings(
        name="okta", url="http://127.0.0.1:9/scim/v2", token=SecretStr(TOKEN)
    )
    enricher = ScimEnricher(settings, metrics)
    ev = event("alice")

    await enricher.enrich([ev])
    await enricher.aclose()

    assert ev.context["enrichment_errors"] == ["okta: request failed: ConnectError"]


async def test_rate_limit_bounds_requests(scim: ScimServer, metrics: Metrics) -> None:
    """Lookups beyond the bucket and its wait budget are marked, not queued."""
    clock = FakeClock()
    enricher = enricher_for(scim, metrics, clock, rate=1, burst=2, max_wait=0)
    events = [event(f"user{i}") for i in range(5)]

    await enricher.enrich(events)
    await enricher.aclose()

    marked = [e for e in events if "enrichment_errors" in e.context]
    assert len(scim.state.requests) == 2
    assert len(marked) == 3
    assert marked[0].context["enrichment_errors"] == ["okta: lookup rate limit reached"]


def test_filter_value_is_escaped() -> None:
    """Quotes and backslashes in a name cannot break out of the filter literal."""
    from enrichers.scim import _quote

    assert _quote('a"b\\c') == 'a\\"b\\\\c'


@pytest.mark.parametrize(
    ("active", "status"),
    [("false", "suspended"), (False, "suspended"), ("true", "active"), ("maybe", None)],
)
def test_active_flag_is_read_as_a_flag(active: object, status: str | None) -> None:
    """``"active": "false"`` as a string means suspended, not active."""
    user = scim_user({"userName": "ana", "active": active})

    assert user is not None
    assert user.status == status

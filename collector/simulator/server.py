"""The HTTP simulator: DC auditing API, Cloud events-stream, fault switches.

A stdlib ``ThreadingHTTPServer`` in a daemon thread, so it runs beside an
asyncio loop in the same process or as a subprocess. Loopback only by default.

Endpoints:
- ``GET /rest/auditing/1.0/events`` (see ``dc_api``); every answered request
  appends an "Audit Log search performed" event by the requesting account.
- ``GET /admin/v1/orgs/{orgId}/events-stream`` (see ``cloud_api``); 429 with
  ``Retry-After`` beyond ``cloud_rate_per_min`` requests a minute on the path.
- ``GET /__sim/state``, ``GET /__sim/served?instance=...``,
  ``POST /__sim/clock`` with ``{"now": ISO}`` or ``{"advance_s": n}``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from collector.simulator import cloud_api, dc_api
from collector.simulator import faults as fault_mod
from collector.simulator import records as r
from collector.simulator.activity import search_attributes
from collector.simulator.faults import Faults
from collector.simulator.records import Author, CloudEvent, DcEvent
from collector.simulator.world import COLLECTOR_ACCOUNT, World

logger = structlog.get_logger(__name__)


class SimClock:
    """Simulated now: frozen at a moment, or live (wall clock times ``speed``)."""

    def __init__(self, start: datetime, *, live: bool = False, speed: float = 1.0):
        self._lock = threading.Lock()
        self._base_ms = _ms(start)
        self._wall0 = time.time()
        self.live = live
        self.speed = speed

    @classmethod
    def frozen(cls, moment: datetime) -> SimClock:
        """A clock that stays at ``moment`` until set or advanced."""
        return cls(moment)

    @classmethod
    def running(cls, start: datetime, speed: float = 1.0) -> SimClock:
        """A clock that starts at ``start`` and runs with the wall clock."""
        return cls(start, live=True, speed=speed)

    def now_ms(self) -> int:
        """The simulated now in epoch milliseconds."""
        with self._lock:
            if not self.live:
                return self._base_ms
            return self._base_ms + int((time.time() - self._wall0) * 1000 * self.speed)

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (a live clock keeps running from there)."""
        with self._lock:
            self._base_ms = _ms(moment)
            self._wall0 = time.time()

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        now = self.now_ms()
        self.set(datetime.fromtimestamp(now / 1000 + seconds, UTC))


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    chunks: tuple[int, list[bytes]] | None = None
    trickle: bool = False


class SimulatorServer:
    """Serves a ``World`` over HTTP with the documented behaviour and faults.

    ``token`` (Bearer) and ``basic`` (user, password) protect both APIs when
    set; with neither, any request is accepted and attributed to the Basic
    user name if one is sent, else to
    ``COLLECTOR_ACCOUNT``. ``apis`` chooses what is served (``dc``, ``cloud``);
    the other answers 404. ``clock`` defaults to frozen 15 minutes after the
    world's end, when every late arrival is visible.
    """

    def __init__(
        self,
        world: World,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        org_id: str | None = None,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        clock: SimClock | None = None,
        cursor_object: bool = False,
        search_events: bool = True,
        cloud_rate_per_min: int | None = 50,
        apis: tuple[str, ...] = ("dc", "cloud"),
    ) -> None:
        self.world = world
        self.faults = faults or Faults()
        self.org_id = org_id or world.org_id
        self.token = token
        self.basic = basic
        self.clock = clock or SimClock.frozen(world.end + timedelta(minutes=15))
        self.cursor_object = cursor_object
        self.search_events = search_events
        self.cloud_rate_per_min = cloud_rate_per_min
        self.apis = apis
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._dc = list(world.dc_events)
        self._dc_keys = [(e.epoch_ms, e.seq) for e in self._dc]
        self._next_seq = max((e.seq for e in self._dc), default=0) + 1
        self._cloud = list(world.cloud_events)
        self._cloud_keys = [(e.processed_ms, e.seq) for e in self._cloud]
        self._served_dc: dict[tuple[int, int], DcEvent] = {}
        self._served_cloud: dict[str, CloudEvent] = {}
        self._requests = 0
        self._api_requests = 0
        self._cloud_hits: deque[float] = deque()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------

    def start(self) -> SimulatorServer:
        """Bind and serve in a daemon thread; returns self."""
        handler = _handler_for(self)
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="bb-simulator",
            daemon=True,
        )
        self._thread.start()
        logger.info("simulator.started", base_url=self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); trickling responses end too."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("the simulator is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping.is_set()

    # what was served -----------------------------------------------------

    def served_dc_events(self) -> list[DcEvent]:
        """Every DC event served at least once, oldest first."""
        with self._lock:
            return sorted(self._served_dc.values(), key=lambda e: (e.epoch_ms, e.seq))

    def served_ids(self, instance: str | None = None) -> dict[str, list[str]]:
        """Ids of what was served: DC content hashes and Cloud UUIDs."""
        dc = dc_api.dc_ids(self.served_dc_events(), instance or self.world.instance)
        with self._lock:
            cloud = sorted(self._served_cloud)
        return {"dc": sorted(dc), "cloud": cloud}

    def visible_dc_events(self) -> list[DcEvent]:
        """DC events the API lists at the simulated now (search events included)."""
        now = self.clock.now_ms()
        with self._lock:
            return [e for e in self._dc if e.visible_ms <= now and e.epoch_ms <= now]

    def expected_dc_ids(self, instance: str | None = None) -> set[str]:
        """Ids of every DC event visible now (what a complete collector holds)."""
        return dc_api.dc_ids(self.visible_dc_events(), instance or self.world.instance)

    def expected_cloud_ids(self) -> set[str]:
        """Ids of every Cloud event visible now."""
        now = self.clock.now_ms()
        return {e.id for e in self._cloud if e.processed_ms <= now}

    def state(self) -> dict[str, Any]:
        """Counters and settings, for ``/__sim/state``."""
        now = self.clock.now_ms()
        with self._lock:
            return {
                "now": r.iso_ms(now),
                "live": self.clock.live,
                "requests": self._requests,
                "api_requests": self._api_requests,
                "dc_events": len(self._dc),
                "dc_visible": sum(1 for e in self._dc if e.visible_ms <= now),
                "cloud_events": len(self._cloud),
                "cloud_visible": sum(1 for e in self._cloud if e.processed_ms <= now),
                "served_dc": len(self._served_dc),
                "served_cloud": len(self._served_cloud),
                "world_start": self.world.start.isoformat(),
                "world_end": self.world.end.isoformat(),
                "faults": self.faults.as_dict(),
                "stories": [s.name for s in self.world.stories],
            }

    # request handling ----------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        client_ip: str,
        body: bytes,
    ) -> _Reply:
        """Answer one request (called from handler threads)."""
        url = urlsplit(target)
        params = parse_qs(url.query, keep_blank_values=True)
        with self._lock:
            self._requests += 1
        if url.path.startswith("/__sim/"):
            return self._control(method, url.path, params, body)
        if method != "GET":
            return _json(405, {"errors": [{"message": "method not allowed"}]})
        if url.path == dc_api.PATH and "dc" in self.apis:
            return self._api("dc", lambda: self._dc_request(params, headers, client_ip))
        cloud_path = f"/admin/v1/orgs/{self.org_id}/events-stream"
        if url.path == cloud_path and "cloud" in self.apis:
            return self._api("cloud", lambda: self._cloud_request(params, headers))
        return _json(404, {"errors": [{"message": f"no route for {url.path}"}]})

    def _api(self, api: str, answer: Any) -> _Reply:
        faults = self.faults if self.faults.applies(api) else Faults()
        with self._lock:
            self._api_requests += 1
            count = self._api_requests
        if faults.latency_s:
            time.sleep(faults.latency_s)
        if faults.rate_limit_every and count % faults.rate_limit_every == 0:
            return _json(
                429,
                {"errors": [{"message": "rate limited"}]},
                (("Retry-After", str(faults.retry_after_s)),),
            )
        if faults.error_every and count % faults.error_every == 0:
            return _json(500, {"errors": [{"message": "transient failure"}]})
        reply: _Reply = answer()
        return _apply_body_faults(reply, faults, api)

    def _dc_request(
        self, params: dict[str, list[str]], headers: dict[str, str], client_ip: str
    ) -> _Reply:
        account = self._authenticate(headers, allow_basic=True)
        if account is None:
            return _json(
                401,
                {
                    "errors": [
                        {
                            "message": "Authentication failed. Please "
                            "check your credentials and try again."
                        }
                    ]
                },
            )
        try:
            query = dc_api.parse_query(params)
        except dc_api.BadQuery as exc:
            return _json(400, {"errors": [{"message": str(exc)}]})

        now = self.clock.now_ms()
        with self._lock:
            page = dc_api.select(self._dc, self._dc_keys, query, now)
        if self._poisoned(page.page_index, query.raw_cursor):
            return _json(500, {"errors": [{"message": "Internal server error"}]})

        loop = None
        if self.faults.cursor_loop and self.faults.applies("dc") and page.events:
            loop = f"{page.events[0].epoch_ms},{page.events[0].seq + 1}"
        body = dc_api.response(
            page, self.base_url, cursor_object=self.cursor_object, loop_cursor=loop
        )
        with self._lock:
            for event in page.events:
                self._served_dc[(event.epoch_ms, event.seq)] = event
        if self.search_events:
            self._record_search(account, client_ip, page, now)
        return _json(200, body)

    def _cloud_request(
        self, params: dict[str, list[str]], headers: dict[str, str]
    ) -> _Reply:
        if self._authenticate(headers, allow_basic=False) is None:
            return _json(401, {"code": 401, "message": "Unauthorized"})
        retry = self._cloud_rate_limited()
        if retry is not None:
            return _json(
                429,
                {"code": 429, "message": "Too many requests"},
                (("Retry-After", str(retry)),),
            )
        try:
            query = cloud_api.parse_query(params)
        except dc_api.BadQuery as exc:
            return _json(400, {"code": 400, "message": str(exc)})

        now = self.clock.now_ms()
        with self._lock:
            page = cloud_api.select(self._cloud, self._cloud_keys, query, now)
        if self._poisoned(page.page_index, query.raw_cursor):
            return _json(500, {"code": 500, "message": "Internal server error"})
        loop = None
        if self.faults.cursor_loop and self.faults.applies("cloud"):
            loop = query.raw_cursor or (
                cloud_api.encode_cursor(
                    (page.events[0].processed_ms, page.events[0].seq - 1), query
                )
                if page.events
                else None
            )
        with self._lock:
            for event in page.events:
                self._served_cloud[event.id] = event
        return _json(
            200, cloud_api.response(page, self.org_id, self.base_url, loop_cursor=loop)
        )

    def _poisoned(self, page_index: int, cursor: str | None) -> bool:
        target = self.faults.fail_page
        if target is None:
            return False
        if isinstance(target, int):
            return page_index == target
        return cursor == target

    def _authenticate(
        self, headers: dict[str, str], *, allow_basic: bool
    ) -> str | None:
        """The requesting account, or ``None`` when credentials are wrong."""
        given = headers.get("authorization", "")
        if self.token is None and self.basic is None:
            user = _basic_user(given)
            return user or COLLECTOR_ACCOUNT
        if self.token is not None and given == f"Bearer {self.token}":
            return COLLECTOR_ACCOUNT
        if allow_basic and self.basic is not None and given.startswith("Basic "):
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            if given[6:].strip() == expected:
                return self.basic[0]
        return None

    def _cloud_rate_limited(self) -> int | None:
        if not self.cloud_rate_per_min:
            return None
        now = time.monotonic()
        with self._lock:
            while self._cloud_hits and now - self._cloud_hits[0] >= 60:
                self._cloud_hits.popleft()
            if len(self._cloud_hits) >= self.cloud_rate_per_min:
                return max(1, math.ceil(60 - (now - self._cloud_hits[0])))
            self._cloud_hits.append(now)
        return None

    def _record_search(
        self, account: str, client_ip: str, page: dc_api.DcPage, now: int
    ) -> None:
        person = next((p for p in self.world.people if p.username == account), None)
        who = Author(person.user_id if person else "9999", account)
        extra = search_attributes("", len(page.events), now)
        if page.events:
            seqs = [e.seq for e in page.events]
            extra.append(
                r.attr(
                    "ID Range",
                    "atlassian.audit.event.attribute.id",
                    f"{min(seqs)} - {max(seqs)}",
                )
            )
        with self._lock:
            event = DcEvent(
                epoch_ms=now,
                kind=r.AUDIT_SEARCH,
                author=who,
                source=client_ip,
                node=self.world.node,
                extra=tuple(extra),
                visible_ms=now,
                seq=self._next_seq,
            )
            self._next_seq += 1
            key = (event.epoch_ms, event.seq)
            at = bisect.bisect_right(self._dc_keys, key)
            self._dc_keys.insert(at, key)
            self._dc.insert(at, event)

    def _control(
        self, method: str, path: str, params: dict[str, list[str]], body: bytes
    ) -> _Reply:
        if path == "/__sim/state":
            return _json(200, self.state())
        if path == "/__sim/served":
            names = params.get("instance")
            instance = names[-1] if names else None
            return _json(200, self.served_ids(instance))
        if path == "/__sim/clock" and method == "POST":
            try:
                order = json.loads(body or b"{}")
                if "now" in order:
                    self.clock.set(
                        datetime.fromisoformat(str(order["now"]).replace("Z", "+00:00"))
                    )
                if "advance_s" in order:
                    self.clock.advance(float(order["advance_s"]))
            except (ValueError, TypeError) as exc:
                return _json(400, {"errors": [{"message": str(exc)}]})
            return _json(200, {"now": r.iso_ms(self.clock.now_ms())})
        return _json(404, {"errors": [{"message": f"no route for {path}"}]})


def _basic_user(header: str) -> str | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, _password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user or None


def _json(
    status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()
) -> _Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Reply(status, body, (("Content-Type", "application/json"), *headers))


def _apply_body_faults(reply: _Reply, faults: Faults, api: str) -> _Reply:
    if reply.status != 200:
        return reply
    body = reply.body
    if faults.huge_body_mb:
        return _Reply(
            200, b"", reply.headers, fault_mod.huge_parts(api, faults.huge_body_mb)
        )
    if faults.deep_nesting:
        body = fault_mod.nested(faults.deep_nesting)
    if faults.invalid_utf8:
        body = fault_mod.poison_utf8(body)
    if faults.truncated_json:
        body = fault_mod.truncate(body)
    return _Reply(200, body, reply.headers, trickle=faults.slow_loris)


def _handler_for(server: SimulatorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bb-simulator"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server.handle(
                method, self.path, headers, self.client_address[0], body
            )
            self._send(reply)

        def _send(self, reply: _Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            length = reply.chunks[0] if reply.chunks else len(reply.body)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            try:
                if reply.trickle:
                    self._trickle(reply.body)
                elif reply.chunks:
                    for chunk in reply.chunks[1]:
                        self.wfile.write(chunk)
                else:
                    self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _trickle(self, body: bytes) -> None:
            # One byte a second, never finishing before the client gives up.
            self.wfile.flush()
            for index in range(len(body)):
                if server.stopping:
                    break
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                if server._stopping.wait(1.0):
                    break
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("simulator.requested", line=format % args)

    return Handler


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)

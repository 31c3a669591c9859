"""A Splunk HEC emulator for the sink tests, on 127.0.0.1 and a free port.

It follows the documented protocol (see /work/shared/reference/sinks.md §1):
``Authorization: Splunk <token>`` (401 code 2/3, 403 code 1/4), stacked JSON
envelopes, gzip bodies, per-envelope validation with ``invalid-event-number``
where the envelopes before the bad one are kept (indexed), 413 over
``max_content_length`` (counted on the decompressed body), indexer acks per
channel (ids from 0, forgotten once answered true) and ``/health``.

Switches for failure tests: ``busy`` (503 code 9), ``throttle`` (429),
``fail_status`` (any status for the next n requests), ``delay`` (seconds per
request), ``reject_ids`` (envelopes whose ``event.id`` is listed fail with code
6), ``ack_delay`` (seconds before an ack turns true; ``inf`` never), and
``stop()``/``start()`` to refuse connections for a while on the same port
(``stop`` also cuts open keep-alive connections, as a dying server would).

``keep=False`` (long runs such as the benchmark) validates as usual but keeps
no request or envelope: only ``indexed``, the count of indexed envelopes, grows.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENVELOPE_KEYS = frozenset(
    {"time", "host", "source", "sourcetype", "index", "event", "fields"}
)


@dataclass
class Request:
    """One request as received (decompressed body)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class _Channel:
    next_id: int = 0
    pending: dict[int, float] = field(default_factory=dict)


class HecReceiver:
    """The emulator; all state is guarded by one lock (handlers run in threads)."""

    def __init__(
        self,
        token: str = "11111111-2222-3333-4444-555555555555",
        *,
        use_ack: bool = False,
        max_content_length: int = 800 * 1024 * 1024,
        allowed_indexes: tuple[str, ...] = ("main", "security"),
        keep: bool = True,
    ) -> None:
        self.token = token
        self.disabled_tokens: set[str] = set()
        self.use_ack = use_ack
        self.max_content_length = max_content_length
        self.allowed_indexes = allowed_indexes
        self.busy = False
        self.throttle = False
        self.fail_status: tuple[int, int] | None = None  # (status, remaining count)
        self.delay = 0.0
        self.retry_after: str | None = None
        self.ack_delay = 0.0
        self.reject_ids: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.keep = keep
        self.indexed = 0
        self.silently_dropped = 0
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL of the receiver."""
        return f"http://127.0.0.1:{self.port}"

    def event_ids(self) -> list[str]:
        """Record id of every indexed envelope (raw ``id`` or ECS ``event.id``)."""
        with self._lock:
            return [_record_id(e.get("event")) for e in self.events]

    def start(self) -> None:
        """Listen (on the same port as before after a ``stop``)."""
        receiver = self

        class Handler(_Handler):
            owner = receiver

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut open connections; refused until ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            # Handler threads of keep-alive connections outlive serve_forever:
            # without this a "stopped" receiver would keep indexing on them.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def opened(self, connection: socket.socket) -> None:
        """A handler thread took a connection (cut by ``stop``)."""
        with self._lock:
            self._connections.add(connection)

    def closed(self, connection: socket.socket) -> None:
        """A handler thread is done with a connection."""
        with self._lock:
            self._connections.discard(connection)

    # ---- request handling (called from handler threads) ----

    def handle(
        self, path: str, headers: dict[str, str], query: str, raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        """The status and JSON reply for one POST."""
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            status, reply, body = self._handle_locked(path, headers, query, raw)
            if self.keep:
                self.requests.append(Request(path, headers, body, status))
        return status, reply

    def _handle_locked(
        self, path: str, headers: dict[str, str], query: str, raw: bytes
    ) -> tuple[int, dict[str, Any], bytes]:
        auth = _check_auth(
            headers.get("authorization"), self.token, self.disabled_tokens
        )
        if auth is not None:
            return auth[0], auth[1], raw
        if self.fail_status is not None:
            status, left = self.fail_status
            self.fail_status = (status, left - 1) if left > 1 else None
            return status, {"text": "Injected failure", "code": 8}, raw
        if self.busy:
            return 503, {"text": "Server is busy", "code": 9}, raw
        if self.throttle:
            return 429, {"text": "Too many requests"}, raw
        try:
            body = (
                gzip.decompress(raw)
                if headers.get("content-encoding") == "gzip"
                else raw
            )
        except (OSError, EOFError):
            return 400, {"text": "Invalid data format", "code": 6}, raw
        if len(body) > self.max_content_length:
            return 413, {"text": "Content too large"}, body
        channel, error = self._channel(headers, query)
        if error is not None:
            return 400, error, body
        if path.rstrip("/").endswith("/ack"):
            return (*self._ack(channel, body), body)
        return (*self._event(channel, body), body)

    def _channel(
        self, headers: dict[str, str], query: str
    ) -> tuple[str | None, dict[str, Any] | None]:
        channel = headers.get("x-splunk-request-channel")
        if channel is None and query.startswith("channel="):
            channel = query.removeprefix("channel=")
        if not self.use_ack:
            return channel, None
        if not channel:
            return None, {"text": "Data channel is missing", "code": 10}
        try:
            uuid.UUID(channel)
        except ValueError:
            return None, {"text": "Invalid data channel", "code": 11}
        return channel, None

    def _event(self, channel: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        objects, parse_error = _split_stacked(body)
        if not objects and parse_error is None:
            return 400, {"text": "No data", "code": 5}
        for number, obj in enumerate(objects):
            code = self._invalid_code(obj)
            if code == -1:
                # Splunk's silent trap: an unknown key stops indexing here, 200.
                self.silently_dropped += len(objects) - number
                break
            if code is not None:
                text = {
                    6: "Invalid data format",
                    7: "Incorrect index",
                    12: "Event field is required",
                    13: "Event field cannot be blank",
                    15: "Error in handling indexed fields",
                }[code]
                return 400, {"text": text, "code": code, "invalid-event-number": number}
            self.indexed += 1
            if self.keep:
                self.events.append(obj)
        else:
            if parse_error is not None:
                return 400, {
                    "text": "Invalid data format",
                    "code": 6,
                    "invalid-event-number": len(objects),
                }
        reply: dict[str, Any] = {"text": "Success", "code": 0}
        if self.use_ack and channel is not None:
            state = self._channels.setdefault(channel, _Channel())
            reply["ackId"] = state.next_id
            state.pending[state.next_id] = time.monotonic() + self.ack_delay
            state.next_id += 1
        return 200, reply

    def _invalid_code(self, obj: Any) -> int | None:
        """The HEC code for a bad envelope, -1 for an unknown key, None if fine."""
        if not isinstance(obj, dict):
            return 6
        if set(obj) - ENVELOPE_KEYS:
            return -1
        if "event" not in obj:
            return 12
        event = obj["event"]
        if isinstance(event, str) and not event.strip():
            return 13
        if event is None or event is False:
            return 6
        if _record_id(event) in self.reject_ids:
            return 6
        if "time" in obj and not _numeric_time(obj["time"]):
            return 15
        if "fields" in obj and not _string_fields(obj["fields"]):
            return 15
        if "index" in obj and obj["index"] not in self.allowed_indexes:
            return 7
        return None

    def _ack(self, channel: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if not self.use_ack:
            return 400, {"text": "ACK is disabled", "code": 14}
        try:
            asked = json.loads(body)["acks"]
        except (ValueError, KeyError, TypeError):
            return 400, {"text": "Invalid data format", "code": 6}
        state = self._channels.setdefault(channel or "", _Channel())
        now = time.monotonic()
        answer: dict[str, bool] = {}
        for ack_id in asked:
            due = state.pending.get(ack_id)
            done = due is not None and due <= now
            if done:
                del state.pending[ack_id]  # forgotten once answered true
            answer[str(ack_id)] = done
        return 200, {"acks": answer}


class _Handler(BaseHTTPRequestHandler):
    owner: HecReceiver
    protocol_version = "HTTP/1.1"
    # The reply goes out as two writes (headers, body): with Nagle on, the
    # body waits for the client's delayed ACK, 40 ms per request on Linux.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.owner.opened(self.connection)

    def finish(self) -> None:
        self.owner.closed(self.connection)
        super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, reply = self.owner.handle(path, headers, query, raw)
        extra = {}
        if status in (429, 503) and self.owner.retry_after is not None:
            extra["Retry-After"] = self.owner.retry_after
        self._reply(status, reply, extra)

    def do_GET(self) -> None:
        if self.path.startswith("/services/collector/health"):
            self._reply(200, {"text": "HEC is healthy", "code": 17})
        else:
            self._reply(404, {"text": "Not found"})

    def _reply(
        self, status: int, reply: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on recorded requests, not on stderr."""


def _record_id(event: Any) -> str:
    """The record id in a rendered document: ``id`` (raw) or ``event.id`` (ECS)."""
    if not isinstance(event, dict):
        return ""
    inner = event.get("event")
    if "id" not in event and isinstance(inner, dict):
        return str(inner.get("id"))
    return str(event.get("id"))


def _check_auth(
    header: str | None, token: str, disabled: set[str]
) -> tuple[int, dict[str, Any]] | None:
    if not header:
        return 401, {"text": "Token is required", "code": 2}
    scheme, _, value = header.partition(" ")
    if scheme != "Splunk" or not value:
        return 401, {"text": "Invalid authorization", "code": 3}
    if value in disabled:
        return 403, {"text": "Token disabled", "code": 1}
    if value != token:
        return 403, {"text": "Invalid token", "code": 4}
    return None


def _split_stacked(body: bytes) -> tuple[list[Any], str | None]:
    """Objects concatenated with optional whitespace; the error stops the split."""
    decoder = json.JSONDecoder()
    text = body.decode("utf-8", "replace")
    objects: list[Any] = []
    index = 0
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if index >= len(text):
            return objects, None
        try:
            obj, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            return objects, str(exc)
        objects.append(obj)


def _numeric_time(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return "e" not in value.lower() and math.isfinite(float(value))
        except ValueError:
            return False
    return False


def _string_fields(fields: Any) -> bool:
    if not isinstance(fields, dict):
        return False
    for value in fields.values():
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                return False
        elif not isinstance(value, str):
            return False
    return True

"""The metrics and health endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

A deliberately small HTTP/1.1 server on the collector's own event loop, with no
dependency beyond the standard library and ``prometheus_client``'s text
exposition. Answering on the loop is the point of ``/healthz``: if the loop is
stuck, the probe times out and the orchestrator restarts the process.

Every connection gets one request and one response, then is closed. Requests
are bounded (8 KiB of head, 64 headers, no body) and each read and write has a
deadline, so slow or hostile clients cannot hold the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector.metrics import Metrics

logger = structlog.get_logger(__name__)

Readiness = Callable[[], tuple[bool, Mapping[str, Any]]]

MAX_HEAD_BYTES = 8 * 1024
MAX_HEADERS = 64
MAX_CONNECTIONS = 32
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


class _BadRequest(Exception):
    """The request cannot be served; ``status`` says why."""

    def __init__(self, status: HTTPStatus) -> None:
        self.status = status
        super().__init__(status.phrase)


class HealthServer:
    """Serves metrics and probes on ``host:port`` (port 0 picks a free one).

    ``readiness`` returns ``(ready, details)``; ``details`` goes into the JSON
    body of ``/readyz`` (the reasons when not ready). It runs on the loop and
    must be quick and must not block. ``start_draining`` makes ``/readyz``
    answer 503 from then on, whatever ``readiness`` says.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry | Metrics,
        readiness: Readiness,
    ) -> None:
        self.host = host
        self.port = port
        self._registry = (
            registry.registry if isinstance(registry, Metrics) else registry
        )
        self._readiness = readiness
        self._draining = False
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and start serving; ``port`` then holds the bound port."""
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

        logger.info("http.started", host=self.host, port=self.port)

    def start_draining(self) -> None:
        """From now on ``/readyz`` answers 503 ``{"draining": true}``."""
        self._draining = True

    async def aclose(self) -> None:
        """Stop accepting, end open connections and wait for them. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return

        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

        logger.info("http.stopped", port=self.port)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if self._slots.locked():
                # Over the limit: close rather than queue, so a flood of idle
                # connections cannot starve the probe that matters.
                return
            async with self._slots:
                await self._serve(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            method, path = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT_S)
            status, content_type, body = self._route(method, path)
        except _BadRequest as exc:
            status, content_type, body = exc.status, _TEXT, _phrase(exc.status)
            method = "GET"
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return

        response = _response(status, content_type, body, head_only=method == "HEAD")
        with contextlib.suppress(TimeoutError, ConnectionError):
            writer.write(response)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)

    def _route(self, method: str, path: str) -> tuple[HTTPStatus, str, bytes]:
        if method not in ("GET", "HEAD"):
            raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED)

        route = path.split("?", 1)[0]
        if route == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if route == "/healthz":
            return HTTPStatus.OK, _JSON, b'{"ok":true}'
        if route == "/readyz":
            return self._ready()
        raise _BadRequest(HTTPStatus.NOT_FOUND)

    def _ready(self) -> tuple[HTTPStatus, str, bytes]:
        if self._draining:
            return _json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "draining": True}
            )

        try:
            ready, details = self._readiness()
        except Exception as exc:
            logger.exception("http.readiness_failed")
            details, ready = {"readiness": f"check raised {type(exc).__name__}"}, False

        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        key = "details" if ready else "reasons"

        return _json(status, {"ready": ready, key: dict(details)})


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and target of one request; raises ``_BadRequest``."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
        raise

    lines = head.decode("latin-1").split("\r\n")[:-2]
    if len(lines) - 1 > MAX_HEADERS:
        raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1]:
        raise _BadRequest(HTTPStatus.BAD_REQUEST)

    _reject_body(lines[1:])

    return parts[0], parts[1]


def _reject_body(header_lines: list[str]) -> None:
    # Probes and scrapes never send a body; refusing one means we never have
    # to read or skip one.
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        lowered = name.strip().lower()
        if lowered == "transfer-encoding" or (
            lowered == "content-length" and value.strip() not in ("", "0")
        ):
            raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


def _json(status: HTTPStatus, body: Mapping[str, Any]) -> tuple[HTTPStatus, str, bytes]:
    return status, _JSON, orjson.dumps(body, default=str)


def _phrase(status: HTTPStatus) -> bytes:
    return f"{status.value} {status.phrase}\n".encode()


def _response(
    status: HTTPStatus, content_type: str, body: bytes, *, head_only: bool
) -> bytes:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


__all__ = ["HealthServer", "Readiness"]

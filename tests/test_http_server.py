"""Tests for collector.http_server: real loopback requests against HealthServer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from collector.http_server import MAX_CONNECTIONS, HealthServer
from collector.metrics import Metrics


class _Ready:
    """A readiness callback the test can flip."""

    def __init__(self) -> None:
        self.ready = True
        self.reasons: dict[str, Any] = {}

    def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        return self.ready, self.reasons


@pytest.fixture
def ready() -> _Ready:
    return _Ready()


@pytest.fixture
async def server(ready: _Ready) -> AsyncIterator[HealthServer]:
    metrics = Metrics(CollectorRegistry())
    metrics.events_read.labels(source="dc").inc(5)
    health = HealthServer("127.0.0.1", 0, metrics, ready)
    await health.start()
    yield health
    await health.aclose()


@pytest.fixture
async def client(server: HealthServer) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        yield http


async def _raw(server: HealthServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    """After start, port holds the actual bound port."""
    assert server.port > 0


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    """/healthz answers 200 with a JSON body while the loop runs."""
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_metrics_exposition(client: httpx.AsyncClient) -> None:
    """/metrics serves Prometheus text with the pipeline's metric names."""
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'bbaudit_events_read_total{source="dc"} 5.0' in response.text
    assert "# TYPE bbaudit_queue_depth gauge" in response.text


async def test_readyz_ready(client: httpx.AsyncClient, ready: _Ready) -> None:
    """/readyz answers 200 when the readiness callback says ready."""
    ready.reasons = {"sources": "polling"}

    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "details": {"sources": "polling"}}


async def test_readyz_not_ready(client: httpx.AsyncClient, ready: _Ready) -> None:
    """/readyz answers 503 with the reasons when not ready."""
    ready.ready = False
    ready.reasons = {"sink:kafka": "unhealthy"}

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["reasons"] == {"sink:kafka": "unhealthy"}


async def test_readyz_503_while_draining(
    client: httpx.AsyncClient, server: HealthServer
) -> None:
    """Once draining, /readyz answers 503 even though readiness says ready."""
    server.start_draining()

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"ready": False, "draining": True}


async def test_readiness_exception_reported(ready: _Ready) -> None:
    """A raising readiness callback is reported as a reason with status 503."""

    def broken() -> tuple[bool, Mapping[str, Any]]:
        raise RuntimeError("boom")

    health = HealthServer("127.0.0.1", 0, CollectorRegistry(), broken)
    await health.start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{health.port}/readyz")
    finally:
        await health.aclose()

    assert response.status_code == 503
    assert "RuntimeError" in response.json()["reasons"]["readiness"]


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    """Unknown paths get 404 and other methods 405."""
    assert (await client.get("/nope")).status_code == 404
    assert (await client.post("/metrics")).status_code == 405


async def test_head_has_no_body(client: httpx.AsyncClient) -> None:
    """HEAD answers the status without a body."""
    response = await client.head("/healthz")

    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nno-colon-here\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"413"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", b"431"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", b"431"),
    ],
)
async def test_bad_requests_are_refused(
    server: HealthServer, request_bytes: bytes, status: bytes
) -> None:
    """Malformed, oversized or body-carrying requests get a 4xx, not a crash."""
    answer = await _raw(server, request_bytes)

    assert answer.split(b" ", 2)[1] == status
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{server.port}/healthz")
    assert health.status_code == 200


async def test_half_request_then_close(server: HealthServer) -> None:
    """A client that disconnects mid-request leaves the server serving."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /hea")
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/healthz")
    assert response.status_code == 200


async def test_idle_clients_do_not_block_probes(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections beyond the limit are closed, and slow ones time out."""
    monkeypatch.setattr("collector.http_server.READ_TIMEOUT_S", 0.3)
    idle = [
        await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(MAX_CONNECTIONS + 5)
    ]
    await asyncio.sleep(0.5)

    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/healthz")
    assert response.status_code == 200

    for _, writer in idle:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_aclose_is_idempotent(server: HealthServer) -> None:
    """Closing twice is harmless and the port stops answering."""
    await server.aclose()
    await server.aclose()

    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)

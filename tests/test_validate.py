"""Tests for collector.validate: connectivity checks against loopback services."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.app import load_plugins
from collector.config import AppSettings, parse_config
from collector.validate import (
    ConnectivityResult,
    check_connectivity,
    format_validation_report,
)

TOKEN = "hec-token-0c5f3a9e-validate"
PASSWORD = "dc-password-77aa"


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 500 if self.path.startswith("/broken") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
async def tcp_port() -> AsyncIterator[int]:
    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _settings(data: dict[str, Any]) -> AppSettings:
    load_plugins()
    return parse_config(data)


def _by_component(results: list[ConnectivityResult]) -> dict[str, ConnectivityResult]:
    return {r.component: r for r in results}


async def test_reachable_components_pass(
    http_base: str, tcp_port: int, tmp_path: Path
) -> None:
    """Reachable HTTP, TCP and file targets all pass, in config order."""
    settings = _settings(
        {
            "state_dir": str(tmp_path / "state"),
            "sources": [
                {
                    "kind": "dc_rest",
                    "name": "dc",
                    "base_url": http_base,
                    "auth": {"username": "svc", "password": PASSWORD},
                }
            ],
            "sinks": [
                {"kind": "splunk_hec", "name": "hec", "url": http_base, "token": TOKEN},
                {
                    "kind": "syslog",
                    "name": "sys",
                    "host": "127.0.0.1",
                    "port": tcp_port,
                    "transport": "tcp",
                },
                {"kind": "file", "name": "f", "path": str(tmp_path / "o" / "x.jsonl")},
            ],
        }
    )

    results = await check_connectivity(settings, timeout_s=2)

    assert [r.component for r in results] == [
        "state_dir",
        "source:dc",
        "sink:hec",
        "sink:sys",
        "sink:f",
    ]
    assert all(r.ok for r in results), format_validation_report(results)
    assert "/status: HTTP 200" in _by_component(results)["source:dc"].detail


async def test_unreachable_components_fail(http_base: str, tmp_path: Path) -> None:
    """A refused port, a 5xx and a missing file are reported as failures."""
    closed = _closed_port()
    settings = _settings(
        {
            "state_dir": str(tmp_path),
            "sources": [
                {"kind": "dc_file", "name": "files", "path": "/nonexistent/x.log"},
            ],
            "sinks": [
                {
                    "kind": "splunk_hec",
                    "name": "hec",
                    "url": f"{http_base}/broken",
                    "token": TOKEN,
                },
                {
                    "kind": "syslog",
                    "name": "sys",
                    "host": "127.0.0.1",
                    "port": closed,
                    "transport": "tcp",
                },
            ],
        }
    )

    results = _by_component(await check_connectivity(settings, timeout_s=2))

    assert not results["source:files"].ok
    assert not results["sink:hec"].ok
    assert "HTTP 500" in results["sink:hec"].detail
    assert not results["sink:sys"].ok
    assert results["state_dir"].ok


async def test_details_never_hold_secrets(tmp_path: Path) -> None:
    """Userinfo, query tokens and registered secrets stay out of every detail."""
    closed = _closed_port()
    settings = _settings(
        {
            "state_dir": str(tmp_path),
            "sinks": [
                {
                    "kind": "splunk_hec",
                    "name": "hec",
                    "url": f"http://u:{PASSWORD}@127.0.0.1:{closed}/?token={TOKEN}",
                    "token": TOKEN,
                }
            ],
        }
    )

    results = await check_connectivity(settings, timeout_s=2)
    report = format_validation_report(results)

    assert not results[-1].ok
    assert TOKEN not in report
    assert PASSWORD not in report
    assert f"127.0.0.1:{closed}" in report


async def test_tls_handshake_failure_is_reported(tcp_port: int, tmp_path: Path) -> None:
    """A TLS syslog target that is not speaking TLS fails the check."""
    settings = _settings(
        {
            "state_dir": str(tmp_path),
            "sinks": [
                {
                    "kind": "syslog",
                    "name": "sys",
                    "host": "127.0.0.1",
                    "port": tcp_port,
                    "transport": "tls",
                }
            ],
        }
    )

    [_, result] = await check_connectivity(settings, timeout_s=2)

    assert not result.ok
    assert result.detail.startswith(f"tls 127.0.0.1:{tcp_port}")


def test_report_lists_every_result() -> None:
    """The report has one line per result and a summary."""
    report = format_validation_report(
        [
            ConnectivityResult("source:dc", True, "HTTP 200"),
            ConnectivityResult("sink:kafka", False, "refused"),
        ]
    )

    assert "ok    source:dc" in report
    assert "FAIL  sink:kafka  refused" in report
    assert report.endswith("1 of 2 checks passed")

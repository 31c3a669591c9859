"""Tests for collector.logs: one JSON stream, and no secret in it on any path."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
import structlog

from collector.logs import configure_logging
from collector.secrets import forget_secrets, register_secret, scrub_text

TOKEN = "bbtok-9f8e7d6c5b4a-SECRET"
PASSWORD = "hunter2-Pa55"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    forget_secrets()
    register_secret(TOKEN)
    register_secret(PASSWORD)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bbaudit_handler", False):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()
    forget_secrets()


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_json_line_has_fixed_keys() -> None:
    """A log event becomes one JSON line with timestamp, level, logger, log_event."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger("collector.poll").info("poll.completed", fetched=3)

    [line] = _lines(out)
    assert line["log_event"] == "poll.completed"
    assert line["level"] == "info"
    assert line["logger"] == "collector.poll"
    assert line["timestamp"].endswith("Z")
    assert line["fetched"] == 3
    assert "event" not in line


def test_contextvars_are_merged() -> None:
    """Values bound through structlog.contextvars appear on ours and foreign lines."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    with structlog.contextvars.bound_contextvars(poll_cycle=7):
        structlog.get_logger("collector.x").info("poll.started")
        logging.getLogger("aiokafka").warning("broker gone")

    assert [line["poll_cycle"] for line in _lines(out)] == [7, 7]


def test_level_filters_debug() -> None:
    """At info level a debug log event is not written."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger("collector.x").debug("page.read")

    assert out.getvalue() == ""


def test_unknown_level_and_format_are_rejected() -> None:
    """A bad level or format name raises ValueError."""
    with pytest.raises(ValueError, match="level"):
        configure_logging("loud", "json", io.StringIO())
    with pytest.raises(ValueError, match="format"):
        configure_logging("info", "xml", io.StringIO())


def test_secret_in_value_message_and_key_is_redacted() -> None:
    """A registered token in a value, a nested value or the event name is masked."""
    out = io.StringIO()
    configure_logging("debug", "json", out)
    log = structlog.get_logger("collector.x")

    log.info(f"odd.event {TOKEN}", detail=f"sent {TOKEN}", nested={"a": [TOKEN]})
    log.info("client.built", api_key="not-registered-but-named", token_count=3)

    text = out.getvalue()
    assert TOKEN not in text
    assert "not-registered-but-named" not in text
    assert _lines(out)[1]["token_count"] == 3


def test_secret_in_exception_is_redacted() -> None:
    """A token inside an exception message and traceback is masked."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = structlog.get_logger("collector.x")

    try:
        raise RuntimeError(f"auth failed with {TOKEN} and {PASSWORD}")
    except RuntimeError:
        log.exception("task.died")

    [line] = _lines(out)
    assert "RuntimeError" in line["exception"]
    assert TOKEN not in out.getvalue()
    assert PASSWORD not in out.getvalue()


def test_foreign_exception_is_redacted() -> None:
    """A stdlib record with exc_info is rendered and masked like our own."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    try:
        raise ValueError(TOKEN)
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    [line] = _lines(out)
    assert line["logger"] == "asyncio"
    assert "ValueError" in line["exception"]
    assert TOKEN not in out.getvalue()


def test_unregistered_credentials_are_scrubbed() -> None:
    """Header patterns and URL userinfo are masked even when never registered."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = structlog.get_logger("collector.x")

    log.warning("a", header="Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y")
    log.warning("b", header="Authorization: Splunk 0b1c2d3e-aaaa-bbbb")
    log.warning("c", url="https://alice:pw-in-url@bitbucket.local/rest")
    log.warning("d", headers={"Cookie": "JSESSIONID=abc123"})

    text = out.getvalue()
    for leaked in ("eyJhbGciOiJIUzI1NiJ9", "0b1c2d3e", "pw-in-url", "JSESSIONID"):
        assert leaked not in text
    assert "bitbucket.local/rest" in text


def test_httpx_request_logs_never_carry_the_token(http_server: str) -> None:
    """A real httpx request with the token in header and URL logs no token."""
    out = io.StringIO()
    configure_logging("debug", "json", out)
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    logging.getLogger("httpcore").setLevel(logging.DEBUG)
    url = f"http://svc:{PASSWORD}@{http_server}/rest/audit?token={TOKEN}"

    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get(url).status_code == 200

    lines = _lines(out)
    assert any(line["logger"] == "httpx" for line in lines)
    assert any(line["logger"].startswith("httpcore") for line in lines)
    assert TOKEN not in out.getvalue()
    assert PASSWORD not in out.getvalue()


def test_httpx_is_quiet_by_default() -> None:
    """At info level httpx's per-request INFO lines are suppressed."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    logging.getLogger("httpx").info("HTTP Request: GET http://x")

    assert out.getvalue() == ""


def test_console_format_redacts() -> None:
    """The console renderer writes readable lines with secrets masked."""
    out = io.StringIO()
    configure_logging("info", "console", out)

    structlog.get_logger("collector.x").info("config.loaded", note=TOKEN)

    assert "config.loaded" in out.getvalue()
    assert TOKEN not in out.getvalue()


def test_reconfigure_replaces_only_our_handler() -> None:
    """Calling configure_logging twice leaves exactly one bbaudit handler."""
    configure_logging("info", "json", io.StringIO())
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger("collector.x").info("x.happened")

    ours = [h for h in logging.getLogger().handlers if hasattr(h, "_bbaudit_handler")]
    assert len(ours) == 1
    assert len(_lines(out)) == 1


def test_crlf_cannot_forge_lines() -> None:
    """CR/LF in a value stays inside one JSON line (CWE-117)."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger("collector.x").info("user.seen", user="bob\n{forged}")

    assert len(out.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "Token expired",
        "Basic settings",
        "poll.completed",
        "user alice@example.com",
    ],
)
def test_scrub_keeps_prose(text: str) -> None:
    """Ordinary prose that merely mentions an auth word is left alone."""
    assert scrub_text(text) == text

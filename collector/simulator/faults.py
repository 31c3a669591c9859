"""Fault switches for the simulator, and the body transforms they apply."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

_TARGETS = ("dc", "cloud")


@dataclass(frozen=True, slots=True)
class Faults:
    """What the simulator should break. Everything is off by default.

    - ``rate_limit_every``: every Nth API request answers 429 with ``Retry-After``
      (``retry_after_s`` seconds).
    - ``error_every``: every Nth API request answers 500 (transient).
    - ``fail_page``: a page index (0 = first page of a query) or an exact
      cursor string whose request answers 500 forever.
    - ``truncated_json``: the body is cut in half (Content-Length matches the cut).
    - ``huge_body_mb``: the body is a valid JSON document of about this size.
    - ``deep_nesting``: the body is an array nested this deep.
    - ``invalid_utf8``: bytes that are not UTF-8 are put inside a string value.
    - ``slow_loris``: headers are sent, then the body trickles one byte a second
      until the client gives up or the server stops.
    - ``cursor_loop``: every page names the same next cursor (DC and Cloud).
    - ``latency_s``: each API request waits this long before answering.
    - ``targets``: which APIs the switches apply to (``dc``, ``cloud``).
    """

    rate_limit_every: int = 0
    retry_after_s: int = 1
    error_every: int = 0
    fail_page: int | str | None = None
    truncated_json: bool = False
    huge_body_mb: float = 0.0
    deep_nesting: int = 0
    invalid_utf8: bool = False
    slow_loris: bool = False
    cursor_loop: bool = False
    latency_s: float = 0.0
    targets: tuple[str, ...] = _TARGETS

    def applies(self, api: str) -> bool:
        """Whether the switches apply to this API (``dc`` or ``cloud``)."""
        return api in self.targets

    def as_dict(self) -> dict[str, Any]:
        """The switches as JSON-ready values."""
        return asdict(self)

    @classmethod
    def parse(cls, text: str) -> Faults:
        """Read ``"rate_limit_every=5,fail_page=2,truncated_json"`` (CLI form)."""
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, raw = item.partition("=")
            values[name] = _coerce(name, raw)
        return cls(**values)


def _coerce(name: str, raw: str) -> Any:
    if name not in Faults.__dataclass_fields__:
        raise ValueError(f"unknown fault {name!r}")
    if name in {"truncated_json", "invalid_utf8", "slow_loris", "cursor_loop"}:
        return raw.lower() not in {"0", "false", "no"}
    if name in {"huge_body_mb", "latency_s"}:
        return float(raw)
    if name == "targets":
        return tuple(raw.split("+"))
    if name == "fail_page":
        return int(raw) if raw.isdigit() else raw
    return int(raw)


def truncate(body: bytes) -> bytes:
    """The first half of a body (never empty)."""
    return body[: max(1, len(body) // 2)]


def poison_utf8(body: bytes) -> bytes:
    """Put invalid UTF-8 inside the first string value of a JSON body."""
    marker = body.find(b'":"')
    if marker < 0:
        return body + b"\xff\xfe"
    cut = marker + 3
    return body[:cut] + b"\xc3\x28\xff" + body[cut:]


def nested(depth: int) -> bytes:
    """A JSON array nested ``depth`` deep."""
    return b"[" * depth + b"]" * depth


def huge_parts(api: str, megabytes: float) -> tuple[int, list[bytes]]:
    """(length, chunks) of a valid JSON page of about ``megabytes`` MB.

    The size sits in one string value so that a reader without a body cap has
    to hold it all in memory.
    """
    pad = max(1, int(megabytes * 1024 * 1024))
    if api == "dc":
        head = b'{"entities":[{"timestamp":"2024-01-01T00:00:00.000Z","pad":"'
        tail = b'"}],"pagingInfo":{"lastPage":true,"size":1}}'
    else:
        head = b'{"data":[{"id":"huge","type":"events","pad":"'
        tail = b'"}],"meta":{"next":null},"links":{}}'
    chunk = b"a" * 65536
    chunks = [head]
    left = pad
    while left > 0:
        chunks.append(chunk[: min(left, len(chunk))])
        left -= len(chunk)
    chunks.append(tail)
    return len(head) + pad + len(tail), chunks

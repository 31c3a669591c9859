"""Logging: every line bbaudit writes, ours and the libraries', as one stream.

``configure_logging`` routes structlog and the standard library through one
``logging`` handler whose ``ProcessorFormatter`` renders JSON lines (or
coloured console lines). Each line carries ``timestamp`` (UTC ISO 8601),
``level``, ``logger`` and ``log_event``: structlog's ``event`` key is renamed
to ``log_event`` because ``event`` is the word for an audit event in our data,
and a log line about an audit event must be able to carry both. Foreign
records (httpx, aiokafka, asyncio) put their formatted message in
``log_event``.

Redaction runs on every line, last before rendering: registered secrets and
credential-shaped text are masked in every string (exception tracebacks are
rendered to text first, then masked), and values under keys named like
``token`` or ``authorization`` are replaced whole.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from collector.secrets import REDACTED, is_secret_key, scrub_text

LogFormat = Literal["json", "console"]
EVENT_KEY = "log_event"
# Libraries that log each HTTP request at INFO: a poller would write a line per
# call. WARNING keeps their failures and drops their chatter.
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack")
# Libraries whose INFO is lifecycle noise (connections, metadata refreshes).
CHATTY_LIBRARIES = ("aiokafka", "kafka")
_HANDLER_MARK = "_bbaudit_handler"
_LEADING_KEYS = ("timestamp", "level", "logger", EVENT_KEY)
_PLAIN = (str, int, float, bool, type(None))


def configure_logging(
    level: str = "info",
    fmt: LogFormat | str = "json",
    stream: IO[str] | None = None,
    *,
    library_level: str = "warning",
) -> logging.Handler:
    """Send structlog and stdlib logging to ``stream`` (stdout by default).

    ``level`` applies to bbaudit's loggers and the root logger; ``library_level``
    is the floor for httpx and httpcore. Calling it again replaces the handler
    it installed before (and nothing else). Returns the installed handler.
    """
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (json or console)")
    numeric = _level_number(level)

    target = stream if stream is not None else sys.stdout
    handler = logging.StreamHandler(target)
    handler.setFormatter(_formatter(fmt, target))
    setattr(handler, _HANDLER_MARK, True)
    _install_handler(handler, numeric)

    _set_library_levels(numeric, _level_number(library_level))
    _configure_structlog()

    return handler


def redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: mask secrets in every key and value of the line."""
    # Fixed keys first so the lines read alike in a terminal and a log viewer.
    first = [key for key in _LEADING_KEYS if key in event_dict]
    keys = first + [key for key in event_dict if key not in _LEADING_KEYS]

    return {_scrub_key(key): _redact_value(key, event_dict[key]) for key in keys}


def _formatter(fmt: str, stream: IO[str]) -> structlog.stdlib.ProcessorFormatter:
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            event_key=EVENT_KEY, colors=_isatty(stream)
        )

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction sees them, so a token in
            # an exception message or a local repr is masked like any other.
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer(EVENT_KEY),
            redact_event,
            renderer,
        ],
    )


def _shared_processors() -> list[Processor]:
    """Steps that our lines and foreign records both take first."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Safe to cache: the chain above never changes between calls; format,
        # stream and level live in the handler and the stdlib loggers.
        cache_logger_on_first_use=True,
    )


def _install_handler(handler: logging.Handler, level: int) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)


def _set_library_levels(level: int, library_floor: int) -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, library_floor))
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def _redact_value(key: Any, value: Any) -> Any:
    if isinstance(key, str) and is_secret_key(key) and _is_secret_like(value):
        return REDACTED
    return _scrub(value, depth=0)


def _scrub(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth > 8:
        return scrub_text(repr(value))
    if isinstance(value, Mapping):
        return {_scrub_key(k): _redact_nested(k, v, depth) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(item, depth + 1) for item in value]
    if isinstance(value, bytes):
        return scrub_text(value.decode("utf-8", "replace"))

    # Anything else is rendered here, so that its text is redacted before the
    # renderer falls back to repr() on its own.
    return scrub_text(str(value))


def _redact_nested(key: Any, value: Any, depth: int) -> Any:
    if isinstance(key, str) and is_secret_key(key) and _is_secret_like(value):
        return REDACTED
    return _scrub(value, depth + 1)


def _scrub_key(key: Any) -> str:
    return scrub_text(key if isinstance(key, str) else str(key))


def _is_secret_like(value: Any) -> bool:
    # Counts and flags under a credential-sounding key (token_count=3,
    # tls_verify_secret=True) are not secrets; strings, bytes and containers
    # might be.
    return value is not None and not isinstance(value, (bool, int, float))


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    # ProcessorFormatter must return str; orjson returns bytes.
    return orjson.dumps(obj, default=default or str).decode("utf-8")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["EVENT_KEY", "configure_logging", "redact_event"]

"""Fixtures shared by every test module."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import structlog

from collector.app import load_plugins
from collector.metrics import Metrics

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Copies of the public sample data (see tests/fixtures/shared/NOTICE.md), so the
# tests run on a clean clone with nothing beside it.
SHARED_DATA = PROJECT_ROOT / "tests" / "fixtures" / "shared"
SAMPLES = SHARED_DATA / "bitbucket"

load_plugins()


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry per test."""
    return Metrics()


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Each test starts and ends with structlog's and logging's defaults, so a
    test that configures logging onto a captured stream cannot break the next."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not isinstance(handler, logging.NullHandler):
            root.removeHandler(handler)


class Closable(Protocol):
    """Anything a test opens and must close: a sink, a transport."""

    async def aclose(self) -> None:
        """Release it."""
        ...


def closes_after_each_test(
    opened: list[Any],
) -> Callable[[], AsyncIterator[None]]:
    """An autouse fixture that closes everything in ``opened`` after each test,
    so no connection outlives its test. Assign it to a name in a test module."""

    @pytest.fixture(autouse=True)
    async def close_opened() -> AsyncIterator[None]:
        yield
        while opened:
            closable: Closable = opened.pop()
            await closable.aclose()

    return close_opened  # type: ignore[no-any-return]  # pytest's decorator is untyped here

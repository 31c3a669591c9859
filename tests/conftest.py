"""Fixtures shared by every test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.app import load_plugins
from collector.metrics import Metrics

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SAMPLES = SHARED_DATA / "bitbucket"

load_plugins()


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry per test."""
    return Metrics()

"""Field types shared by every settings model: durations, byte sizes, base models."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Ten years: longer than any retention, lookback or timeout can mean; a larger
# value is a typo and would overflow datetime arithmetic.
MAX_DURATION_S = 3650 * 86400.0
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90s``, ``9m``, ``24h``, ``250ms``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 9m or 24h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 30s, 9m or 24h")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative number")
    if seconds > MAX_DURATION_S:
        raise ValueError("a duration cannot exceed 3650 days")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from a number or a string like ``512KiB``, ``100MB``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576, 512KiB or 100MB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError("expected a size such as 1048576, 512KiB or 100MB")
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]


class StrictModel(BaseModel):
    """Base of every settings model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSettings(StrictModel):
    """What every source, enricher and sink entry has: its kind and a name.

    The name becomes a metric label, a state key and a field of log lines, so
    it is short and made of plain characters.
    """

    kind: str = Field(max_length=64)
    name: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")

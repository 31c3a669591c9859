"""Retry timing: capped exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the capped exponential) spreads the
retries of many senders so a receiver that comes back is not hit by all of
them at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


def full_jitter(
    attempt: int,
    initial: float,
    cap: float,
    draw: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based)."""
    ceiling = min(cap, initial * 2 ** max(attempt - 1, 0))
    return draw(0.0, ceiling)


class Backoff:
    """Failed attempts at one piece of work: how many, since when, how long to wait."""

    def __init__(
        self,
        initial: float,
        cap: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.attempts = 0
        self._clock = clock
        self._since: float | None = None

    def failed(self) -> float:
        """Count a failure; returns the delay before the next attempt."""
        self.attempts += 1
        if self._since is None:
            self._since = self._clock()
        return full_jitter(self.attempts, self.initial, self.cap)

    def elapsed(self) -> float:
        """Seconds since the first failure (0 before any)."""
        return 0.0 if self._since is None else self._clock() - self._since

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.attempts = 0
        self._since = None

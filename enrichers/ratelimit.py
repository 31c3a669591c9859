"""A token bucket and a circuit breaker for calls to a directory service."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """At most ``rate`` calls a second on average, bursts up to ``burst``.

    ``reserve`` books a token and says how long to wait for it, so callers
    queue fairly without polling; a negative balance is the queue.
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self, max_wait: float | None = None) -> float | None:
        """Seconds to wait before the call, or ``None`` if that exceeds ``max_wait``
        (then nothing is booked)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

        wait = max(0.0, (1.0 - self._tokens) / self.rate)
        if max_wait is not None and wait > max_wait:
            return None
        self._tokens -= 1.0
        return wait


class CircuitBreaker:
    """Stops calls to a service that keeps failing, for a growing while.

    ``threshold`` consecutive failures open it for ``backoff`` seconds, doubled
    on each reopening up to ``max_backoff``. After an opening, the first call
    is a probe: one failure reopens it at once, one success closes it.
    """

    def __init__(
        self,
        threshold: int,
        backoff: float,
        max_backoff: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._failures = 0
        self._backoff = backoff
        self._open_until = 0.0
        self._tripped = False

    @property
    def is_open(self) -> bool:
        """Whether calls should fail fast now."""
        return self._clock() < self._open_until

    def retry_in(self) -> float:
        """Seconds until calls are allowed again (0 when closed)."""
        return max(0.0, self._open_until - self._clock())

    def record_success(self) -> None:
        """A call worked: close and forget past failures."""
        self._failures = 0
        self._tripped = False
        self._backoff = self.base_backoff

    def record_failure(self, *, open_for: float | None = None) -> bool:
        """A call failed; return whether the breaker opened because of it.

        ``open_for`` opens it at once for that long (a 429's Retry-After, or a
        rejected token that will not fix itself within seconds).
        """
        self._failures += 1
        if open_for is None and not self._tripped and self._failures < self.threshold:
            return False

        delay = open_for if open_for is not None else self._backoff
        self._open_until = self._clock() + delay
        self._backoff = min(self._backoff * 2, self.max_backoff)
        self._failures = 0
        self._tripped = True
        return True

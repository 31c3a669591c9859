"""A one-line progress display for long CLI work (replay, backfill).

It draws only on a terminal: when the stream is a pipe or a file (CI, logs
collected by a container runtime) it writes nothing, so output stays clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

# Redrawing more often than this costs time and shows nothing new.
MIN_REDRAW_S = 0.1


class Progress:
    """Count work done and show ``label: count/total rate ETA`` on one line.

    ``total`` may be ``None`` when the amount of work is unknown; then no ETA
    is shown. Use as a context manager or call ``close`` at the end.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        stream: IO[str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.count = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self._drawn_at = float("-inf")
        self._enabled = _isatty(self._stream)
        self._width = 0
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Add ``n`` units of work done and redraw if it is time to."""
        self.count += n
        now = self._clock()
        if self._enabled and now - self._drawn_at >= MIN_REDRAW_S:
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._enabled:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()

    def render(self, now: float) -> str:
        """The line as it would be drawn at monotonic time ``now``."""
        elapsed = max(now - self._started, 1e-9)
        rate = self.count / elapsed
        done = (
            f"{self.count}/{self.total}" if self.total is not None else str(self.count)
        )
        parts = [f"{self.label}: {done}", f"{rate:,.1f}/s"]
        if self.total is not None and self.total > 0:
            parts.insert(1, f"{min(self.count / self.total, 1.0):.0%}")
            parts.append(f"ETA {_eta(self.total - self.count, rate)}")

        return "  ".join(parts)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _draw(self, now: float) -> None:
        line = self.render(now)
        # Pad over the previous, longer line instead of relying on terminal
        # escape codes, which not every terminal honours.
        padding = " " * max(self._width - len(line), 0)
        self._width = len(line)
        self._stream.write(f"\r{line}{padding}")
        self._stream.flush()
        self._drawn_at = now


def _eta(remaining: int, rate: float) -> str:
    if remaining <= 0:
        return "0s"
    if rate <= 0:
        return "?"
    seconds = int(remaining / rate)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["Progress"]

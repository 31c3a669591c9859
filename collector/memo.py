"""A bounded memo for the per-event hot path.

Normalizing and rendering look the same few hundred things up again and
again (actions, authors, repositories, extension keys). ``Memo`` is a plain
dict, so a lookup costs what a dict lookup costs, that empties itself when it
reaches its bound: whatever the input, memory stays bounded, and the hot set
refills within a few batches. Emptying beats evicting one entry at a time
here, because evicting would cost on every miss.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_ENTRIES = 4096


class Memo(dict[K, V]):
    """A dict of remembered results, emptied when it holds ``max_entries``."""

    __slots__ = ("max_entries",)

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        super().__init__()
        self.max_entries = max_entries

    def remember(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying first when full); return it."""
        if len(self) >= self.max_entries:
            self.clear()
        self[key] = value
        return value

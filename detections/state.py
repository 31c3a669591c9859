"""Detection state: sliding windows, first-seen baselines, last locations and
suppression, kept in memory and persisted to the ``StateStore`` kv table.

All times here are *event* times (epoch seconds), so a replay of old audit
events behaves as it did live. Each kind of state lives in its own kv
namespace; only keys touched since the last flush are written. Row expiry in
the store is wall-clock (now + TTL): it bounds the file, while the event-time
logic decides what still counts.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from collector.state import StateStore

_SEP = "\x1f"
_EVICT_FRACTION = 10


def join_key(*parts: str) -> str:
    """One state key from several parts (a separator no audit value contains)."""
    return _SEP.join(parts)


class KeyedState:
    """A namespace of JSON-serializable values with dirty tracking and a key cap.

    When more than ``max_keys`` keys are held, the oldest-inserted tenth is
    dropped: state stays bounded at the price of forgetting the coldest keys.
    """

    def __init__(self, namespace: str, *, ttl_s: float, max_keys: int) -> None:
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.values: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()

    def get(self, key: str) -> Any | None:
        """The value of ``key`` or ``None``."""
        return self.values.get(key)

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` and mark it for the next flush."""
        if key not in self.values and len(self.values) >= self.max_keys:
            self._evict()
        self.values[key] = value
        self._dirty.add(key)

    def touch(self, key: str) -> None:
        """Mark a value that was changed in place."""
        self._dirty.add(key)

    def delete(self, key: str) -> None:
        """Forget ``key`` here and in the store."""
        if self.values.pop(key, None) is not None:
            self._dirty.discard(key)
            self._deleted.add(key)

    def load(self, store: StateStore) -> None:
        """Replace the memory view with the store's live rows."""
        self.values = dict(store.kv_items(self.namespace))
        self._dirty.clear()
        self._deleted.clear()

    def flush(self, store: StateStore) -> int:
        """Write dirty keys and delete forgotten ones; returns keys written."""
        expires = time.time() + self.ttl_s
        rows = [(k, self.encode(self.values[k]), expires) for k in self._dirty]
        if rows:
            store.kv_put_many(self.namespace, rows)
        if self._deleted:
            store.kv_delete(self.namespace, self._deleted)
        self._dirty.clear()
        self._deleted.clear()
        return len(rows)

    def encode(self, value: Any) -> Any:
        """The JSON form of a value (identity unless a subclass keeps objects)."""
        return value

    def _evict(self) -> None:
        drop = max(1, len(self.values) // _EVICT_FRACTION)
        for key in list(self.values)[:drop]:
            self.delete(key)


@dataclass(slots=True)
class Window:
    """Entries of one key in event-time order, with distinct-value counts."""

    items: deque[tuple[float, str, str]] = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=dict)
    newest: float = 0.0

    @property
    def count(self) -> int:
        """Entries in the window."""
        return len(self.items)

    @property
    def distinct(self) -> int:
        """Distinct values in the window."""
        return len(self.counts)

    def event_ids(self, limit: int) -> tuple[str, ...]:
        """The first ``limit`` evidence event ids, oldest first, without repeats."""
        return tuple(dict.fromkeys(eid for _, _, eid in self.items))[:limit]

    def first_id(self) -> str:
        """The oldest evidence event id (anchors the alert id)."""
        return self.items[0][2] if self.items else ""


class SlidingWindows(KeyedState):
    """Event-time sliding windows per key, with count and distinct count.

    An event older than the newest event of its key by more than the allowed
    lateness is refused (``add`` returns ``None``); a later-arriving one within
    it is inserted in order and counts.
    """

    def add(
        self,
        key: str,
        ts: float,
        value: str,
        event_id: str,
        *,
        span_s: float,
        lateness_s: float,
    ) -> Window | None:
        """Add one entry and evict what fell out of ``span_s``."""
        window = self.values.get(key)
        if window is None:
            window = Window()
            self.put(key, window)
        elif ts < window.newest - lateness_s:
            return None
        else:
            self._dirty.add(key)

        items = window.items
        if items and ts < items[-1][0]:
            self._insert(window, (ts, value, event_id))
        else:
            items.append((ts, value, event_id))
            window.counts[value] = window.counts.get(value, 0) + 1
            window.newest = ts
        if items[0][0] < window.newest - span_s:
            self._evict_old(window, span_s)

        return window

    def encode(self, value: Any) -> Any:
        """A window as ``[[ts, value, event id], ...]``."""
        return [list(item) for item in value.items]

    def load(self, store: StateStore) -> None:
        """Rebuild windows from their stored entries."""
        super().load(store)
        self.values = {k: _window_from(v) for k, v in self.values.items()}

    @staticmethod
    def _insert(window: Window, item: tuple[float, str, str]) -> None:
        if not window.items or item[0] >= window.items[-1][0]:
            window.items.append(item)
        else:
            position = bisect.bisect_right([i[0] for i in window.items], item[0])
            window.items.insert(position, item)
        window.counts[item[1]] = window.counts.get(item[1], 0) + 1
        window.newest = max(window.newest, item[0])

    @staticmethod
    def _evict_old(window: Window, span_s: float) -> None:
        horizon = window.newest - span_s
        items, counts = window.items, window.counts
        while items and items[0][0] < horizon:
            _, value, _ = items.popleft()
            left = counts[value] - 1
            if left:
                counts[value] = left
            else:
                del counts[value]


def _window_from(rows: Iterable[Any]) -> Window:
    window = Window()
    for ts, value, event_id in rows:
        SlidingWindows._insert(window, (float(ts), str(value), str(event_id)))
    return window


class Baselines(KeyedState):
    """First-seen values per entity (``join_key(entity, value)`` -> last seen).

    A value is *known* when it was seen within ``ttl_s`` of event time. Last-seen
    times are rewritten at most once an hour per value to keep flushes small.
    """

    refresh_s = 3600.0

    def observe(self, entity: str, value: str, ts: float) -> bool:
        """Record a sighting; True when the value was already known."""
        return self.observe_key(join_key(entity, value), ts)

    def observe_key(self, key: str, ts: float) -> bool:
        """``observe`` with the key already joined (the hot path)."""
        last = self.values.get(key)
        if last is None:
            self.put(key, ts)
            return False

        known: bool = ts - last <= self.ttl_s
        if ts - last > self.refresh_s:
            self.put(key, ts)
        return known


class FirstSeen(KeyedState):
    """When each entity (and ``"*"``, everything) was first seen, in event time."""

    GLOBAL = "*"

    def observe(self, entity: str, ts: float) -> None:
        """Remember the earliest event time of ``entity`` and of everything."""
        for key in (entity, self.GLOBAL):
            first = self.values.get(key)
            if first is None or ts < first:
                self.put(key, ts)

    def age(self, entity: str, ts: float, *, scope: str) -> float:
        """Seconds of history before ``ts`` for the entity or globally."""
        first = self.values.get(self.GLOBAL if scope == "global" else entity)
        return 0.0 if first is None else ts - first


class Suppressions(KeyedState):
    """Per (rule, key): the event time until which new alerts are held back."""

    def active(self, rule_id: str, key: str, ts: float) -> bool:
        """True when an alert of this rule and key fired within its window."""
        until = self.values.get(join_key(rule_id, key))
        return until is not None and ts < until

    def hold(self, rule_id: str, key: str, until: float) -> None:
        """Hold back this rule and key until ``until``."""
        self.put(join_key(rule_id, key), until)

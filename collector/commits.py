"""Grouped checkpoint commits, written on a thread of their own.

Every acknowledged batch moves a checkpoint and adds its event ids to the
dedupe set. Writing that per batch cost about a fifth of the event loop's time
under load: each small transaction scatters random-key inserts over many index
pages. Grouping the batches of up to ``max_delay`` seconds (or ``max_ids`` ids)
into one transaction touches each page once, and the thread keeps the disk work
off the event loop (SQLite releases the GIL while it works).

Why a later commit is safe: until the write has landed, the ids stay "in
flight" for the dedupe check and the stored checkpoint stays behind them. A
crash in between re-reads those batches and sends them again: duplicates the
SIEM can drop by event id, never a loss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from collector.state import StateStore

log = structlog.get_logger(__name__)

# Called on the event loop once a group has landed: (source, ids, batches).
Landed = Callable[[str, list[str], int], None]


@dataclass(slots=True)
class _Group:
    """What is waiting for the next write: latest checkpoint per source, ids."""

    checkpoints: dict[str, Any] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    batches: dict[str, int] = field(default_factory=dict)


class CommitWriter:
    """Collects commits in read order and writes them as one transaction."""

    def __init__(
        self,
        store: StateStore,
        on_landed: Landed,
        *,
        max_delay: float = 0.5,
        max_ids: int = 20_000,
    ) -> None:
        self._path = store.path
        self._on_landed = on_landed
        self._max_delay = max_delay
        self._max_ids = max_ids
        self._group = _Group()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bbaudit-commit")
        self._db: StateStore | None = None
        self._writing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self, source: str, checkpoint: Any | None, event_ids: list[str], batches: int
    ) -> None:
        """Queue one source's done batches; they land within ``max_delay``."""
        group = self._group
        if checkpoint is not None:
            group.checkpoints[source] = checkpoint
        group.seen.extend((event_id, source) for event_id in event_ids)
        group.batches[source] = group.batches.get(source, 0) + batches

        if len(group.seen) >= self._max_ids:
            self._start_write()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._max_delay, self._start_write)

    async def flush(self) -> None:
        """Write everything queued so far and wait until it has landed."""
        while self._writing is not None or self._pending():
            if self._writing is None:
                self._start_write()
            if self._writing is not None:
                await asyncio.shield(self._writing)

    async def aclose(self) -> None:
        """Flush, then close the writer's own connection and thread."""
        try:
            await self.flush()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._close_db
            )
            self._executor.shutdown(wait=True)

    def _pending(self) -> bool:
        return bool(self._group.seen or self._group.checkpoints)

    def _start_write(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is None and self._pending():
            self._writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """Write the queued group; on failure keep it queued for the next try."""
        group, self._group = self._group, _Group()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._commit, group)
        except Exception as exc:
            log.error("state.commit_failed", error=str(exc), ids=len(group.seen))
            self._requeue(group)
            self._writing = None
            loop.call_later(self._max_delay, self._start_write)
            return

        self._writing = None
        self._report(group)
        if len(self._group.seen) >= self._max_ids:
            self._start_write()

    def _commit(self, group: _Group) -> None:
        """On the writer thread: one transaction over its own connection."""
        if self._db is None:
            self._db = StateStore(self._path, check_same_thread=False)
        self._db.commit(group.checkpoints, group.seen)

    def _requeue(self, group: _Group) -> None:
        # Older checkpoints must not overwrite newer ones queued meanwhile.
        newer = self._group
        merged = _Group({**group.checkpoints, **newer.checkpoints})
        merged.seen = group.seen + newer.seen
        for counts in (group.batches, newer.batches):
            for source, count in counts.items():
                merged.batches[source] = merged.batches.get(source, 0) + count
        self._group = merged

    def _report(self, group: _Group) -> None:
        ids_by_source: dict[str, list[str]] = {s: [] for s in group.batches}
        for event_id, source in group.seen:
            ids_by_source.setdefault(source, []).append(event_id)
        for source, ids in ids_by_source.items():
            self._on_landed(source, ids, group.batches.get(source, 0))

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

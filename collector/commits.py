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

_MAX_RETRY_S = 30.0

# Called on the event loop once a group has landed: (source, ids, batches).
Landed = Callable[[str, list[str], int], None]


@dataclass(slots=True)
class _Group:
    """What is waiting for the next write: per source, the latest checkpoint,
    the delivered event ids and how many batches they came in."""

    checkpoints: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    size: int = 0  # ids over all sources

    def add(
        self, source: str, checkpoint: Any | None, event_ids: list[str], batches: int
    ) -> None:
        """Take one source's done batches (later checkpoints win)."""
        if checkpoint is not None:
            self.checkpoints[source] = checkpoint
        self.ids.setdefault(source, []).extend(event_ids)
        self.batches[source] = self.batches.get(source, 0) + batches
        self.size += len(event_ids)

    def pending(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self.size or self.checkpoints or self.batches)

    def seen_pairs(self) -> list[tuple[str, str]]:
        """(event id, source) rows for the dedupe set."""
        return [(i, source) for source, ids in self.ids.items() for i in ids]


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
        self._store = store
        self._on_landed = on_landed
        self._max_delay = max_delay
        self._max_ids = max_ids
        self._group = _Group()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bbaudit-commit")
        self._db: StateStore | None = None
        self._writing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the oldest queued commit has waited max_delay
        self._failures = 0  # writes failed in a row (disk full, locked)
        self._closed = False

    def add(
        self, source: str, checkpoint: Any | None, event_ids: list[str], batches: int
    ) -> None:
        """Queue one source's done batches; they land within ``max_delay``."""
        if self._closed:
            # A sink finished a batch after shutdown began: write it here, on
            # the loop's own connection, rather than drop it.
            self._write_now(source, checkpoint, event_ids, batches)
            return

        group = self._group
        group.add(source, checkpoint, event_ids, batches)
        if group.size >= self._max_ids:
            self._due = True
        self._schedule()

    async def flush(self) -> None:
        """Write everything queued so far and wait until it has landed.

        A failing disk is retried with the same backoff as in normal running,
        so this may wait a long time; ``aclose`` bounds it.
        """
        while self._writing is not None or self._pending():
            if self._writing is not None:
                await asyncio.shield(self._writing)
            elif self._failures:
                # The retry timer starts the next write; wait for it.
                await asyncio.sleep(self._retry_delay())
            else:
                self._due = True
                self._schedule()

    async def aclose(self, grace: float = 10.0) -> None:
        """Flush for up to ``grace`` seconds, then close the thread.

        Commits still queued after that are given up: their checkpoints stay
        behind, so the next run reads those batches again (duplicates, no loss).
        """
        try:
            async with asyncio.timeout(grace):
                await self.flush()
        except TimeoutError:
            log.error(
                "state.commits_abandoned",
                ids=self._group.size,
                reason="state writes kept failing at shutdown; re-sent next run",
            )
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._writing is None:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._close_db
                )
            self._executor.shutdown(wait=self._writing is None)

    def _pending(self) -> bool:
        return self._group.pending()

    def _schedule(self) -> None:
        """Start a write if one is due and none runs; else make sure one will be."""
        if self._writing is not None or not self._pending() or self._closed:
            return
        if self._due:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._due = False
            self._writing = asyncio.get_running_loop().create_task(self._write())
        elif self._timer is None:
            delay = self._retry_delay() if self._failures else self._max_delay
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._due = True
        self._schedule()

    def _retry_delay(self) -> float:
        """max_delay, doubled per failure in a row, at most 30 s."""
        backoff: float = self._max_delay * 2.0 ** min(self._failures, 16)
        return min(backoff, _MAX_RETRY_S)

    async def _write(self) -> None:
        """Write the queued group; on failure keep it queued for a later try."""
        group, self._group = self._group, _Group()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._commit, group)
        except Exception as exc:
            self._failures += 1
            log.error(
                "state.commit_failed",
                error=str(exc)[:200],
                ids=group.size,
                attempt=self._failures,
                retry_in_s=round(self._retry_delay(), 3),
            )
            self._requeue(group)
        else:
            self._failures = 0
            self._report(group)
        finally:
            self._writing = None
        self._schedule()

    def _commit(self, group: _Group) -> None:
        """On the writer thread: one transaction over its own connection."""
        if self._db is None:
            self._db = StateStore(self._store.path, check_same_thread=False)
        self._db.commit(group.checkpoints, group.seen_pairs())

    def _write_now(
        self, source: str, checkpoint: Any | None, event_ids: list[str], batches: int
    ) -> None:
        checkpoints = {source: checkpoint} if checkpoint is not None else {}
        try:
            self._store.commit(checkpoints, [(i, source) for i in event_ids])
        except Exception as exc:
            log.error("state.commit_failed", error=str(exc)[:200], ids=len(event_ids))
            return
        self._on_landed(source, event_ids, batches)

    def _requeue(self, group: _Group) -> None:
        # The failed group is older: replaying the newer one on top of it keeps
        # the newer checkpoints.
        newer = self._group
        for source in newer.batches.keys() | newer.checkpoints.keys():
            group.add(
                source,
                newer.checkpoints.get(source),
                newer.ids.get(source, []),
                newer.batches.get(source, 0),
            )
        self._group = group

    def _report(self, group: _Group) -> None:
        for source, count in group.batches.items():
            self._on_landed(source, group.ids.get(source, []), count)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

"""Acknowledgement tracking: a source's checkpoint moves only when every sink
has taken every batch up to it.

Batches of one source are numbered in the order they were read. Each batch
waits for a known number of sink acknowledgements; when it has them all it is
done, and the checkpoint of the longest run of done batches from the oldest
pending one is committed together with their event ids (the dedupe set).

Without a ``CommitWriter`` the commit is written at once; with one (as the
pipeline runs) it is grouped with others and lands a little later. Either way
the ids count as in flight until it has landed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.commits import CommitWriter
from collector.state import StateStore


@dataclass(slots=True)
class _Pending:
    source: str
    checkpoint: Any
    event_ids: list[str]
    waiting: int
    done: bool = False


@dataclass(slots=True)
class _SourceQueue:
    next_seq: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)
    oldest: int = 0


class AckTracker:
    """Commits checkpoints in read order once all sinks acknowledged."""

    def __init__(
        self,
        store: StateStore,
        on_commit: Callable[[str, int], None] | None = None,
        writer: CommitWriter | None = None,
    ) -> None:
        self._store = store
        self._sources: dict[str, _SourceQueue] = {}
        self._in_flight: set[str] = set()
        self._on_commit = on_commit
        self._writer = writer

    def open(
        self, source: str, checkpoint: Any, event_ids: list[str], waiting: int
    ) -> int:
        """Register a batch that needs ``waiting`` acks; returns its sequence number.

        A batch that needs none (everything was deduplicated or filtered) is
        done at once, but still commits in order behind older batches.
        """
        queue = self._sources.setdefault(source, _SourceQueue())
        seq = queue.next_seq
        queue.next_seq += 1
        queue.pending[seq] = _Pending(source, checkpoint, event_ids, waiting)
        self._in_flight.update(event_ids)
        if waiting == 0:
            self._finish(source, seq)
        return seq

    def ack(self, source: str, seq: int) -> None:
        """One sink took the batch."""
        pending = self._sources[source].pending[seq]
        pending.waiting -= 1
        if pending.waiting == 0:
            self._finish(source, seq)

    def in_flight(self, event_id: str) -> bool:
        """Whether the id is in a batch that is read but not yet committed."""
        return event_id in self._in_flight

    def pending_count(self) -> int:
        """Batches read but not committed, over all sources."""
        return sum(len(q.pending) for q in self._sources.values())

    def _finish(self, source: str, seq: int) -> None:
        queue = self._sources[source]
        queue.pending[seq].done = True
        committed: list[_Pending] = []
        while queue.oldest in queue.pending and queue.pending[queue.oldest].done:
            committed.append(queue.pending.pop(queue.oldest))
            queue.oldest += 1
        if committed:
            self._commit(source, committed)

    def _commit(self, source: str, batches: list[_Pending]) -> None:
        checkpoint = None
        for batch in batches:
            if batch.checkpoint is not None:
                checkpoint = batch.checkpoint
        ids = [event_id for batch in batches for event_id in batch.event_ids]
        if self._writer is not None:
            self._writer.add(source, checkpoint, ids, len(batches))
            return

        seen = [(event_id, source) for event_id in ids]
        self._store.commit({source: checkpoint} if checkpoint is not None else {}, seen)
        self.landed(source, ids, len(batches))

    def landed(self, source: str, event_ids: list[str], batches: int) -> None:
        """A commit is on disk: its ids leave the in-flight set."""
        for event_id in event_ids:
            self._in_flight.discard(event_id)
        if self._on_commit is not None:
            self._on_commit(source, batches)

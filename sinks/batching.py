"""Batching: cut queued submissions into batches by count, bytes and time.

A *submission* is what the pipeline hands a channel (records plus the ``ack``
to call once all of them are durable). Submissions are split or merged freely;
each batch remembers how many records of which submission it carries, so the
channel can acknowledge a submission when its last record is durable.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from collector.model import Alert, Record

Ack = Callable[[], None]

# What an ECS document adds around the raw record (fields, keys, timestamps).
_RENDER_OVERHEAD_BYTES = 600
_ALERT_BASE_BYTES = 900
_EVIDENCE_ID_BYTES = 70


def estimate_size(record: Record) -> int:
    """A cheap estimate of the rendered size in bytes (not exact, never 0)."""
    if isinstance(record, Alert):
        return _ALERT_BASE_BYTES + _EVIDENCE_ID_BYTES * len(record.evidence)
    try:
        # The source's size of the raw record when it has one, which spares a
        # serialization per record and sink on the hot path.
        raw_size = record.raw_size or len(orjson.dumps(record.raw, default=str))
        size = _RENDER_OVERHEAD_BYTES + raw_size
        if record.context:
            size += len(orjson.dumps(record.context, default=str))
    except TypeError:
        # Not serializable (e.g. an integer beyond 64 bits): the sink's
        # rendering will refuse it and the delivery layer drops it with a log
        # line; the estimate only has to be some number.
        return _RENDER_OVERHEAD_BYTES * 4
    return size


@dataclass(slots=True)
class Submission:
    """Records handed over by the pipeline; ``remaining`` are not yet durable."""

    records: list[Record]
    ack: Ack
    taken: int = 0
    remaining: int = 0

    def __post_init__(self) -> None:
        self.remaining = len(self.records)


@dataclass(slots=True)
class Batch:
    """Records to send together, and the submissions they came from."""

    records: list[Record] = field(default_factory=list)
    parts: list[tuple[Submission, int]] = field(default_factory=list)
    bytes: int = 0


class Batcher:
    """Takes submissions from a bounded queue and cuts them into batches."""

    def __init__(
        self,
        queue: asyncio.Queue[Submission],
        *,
        max_records: int,
        max_bytes: int,
        max_wait: float,
    ) -> None:
        self._queue = queue
        self._carry: deque[Submission] = deque()
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_wait = max_wait

    def has_input(self) -> bool:
        """Whether a batch could be cut without waiting."""
        return bool(self._carry) or not self._queue.empty()

    async def wait_for_input(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a submission; whether one came."""
        if self.has_input():
            return True
        try:
            async with asyncio.timeout(seconds):
                self._carry.append(await self._queue.get())
        except TimeoutError:
            return False
        return True

    async def next_batch(self) -> Batch:
        """Wait for records, then fill a batch until a limit or ``max_wait``."""
        if not self.has_input():
            self._carry.append(await self._queue.get())
        deadline = time.monotonic() + self.max_wait
        batch = Batch()
        while self._fill(batch):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self.wait_for_input(remaining):
                break
        return batch

    def next_batch_nowait(self) -> Batch | None:
        """A batch of what is queued now, or ``None`` if nothing is."""
        batch = Batch()
        self._fill(batch)
        return batch if batch.records else None

    def _fill(self, batch: Batch) -> bool:
        """Add queued records; True if the batch has room and input ran out."""
        while True:
            if not self._carry:
                if self._queue.empty():
                    return True
                self._carry.append(self._queue.get_nowait())
            if not self._take(batch, self._carry[0]):
                return False
            self._carry.popleft()

    def _take(self, batch: Batch, submission: Submission) -> bool:
        """Move records of one submission; True if all of it went in."""
        start = submission.taken
        records = submission.records
        end = min(len(records), start + self.max_records - len(batch.records))
        size_so_far = batch.bytes
        taken = start
        # A batch always takes its first record, however big, or it would
        # never move; after that the byte limit closes it.
        filled = len(batch.records) > 0
        for record in records[start:end]:
            size = estimate_size(record)
            if filled and size_so_far + size > self.max_bytes:
                break
            size_so_far += size
            taken += 1
            filled = True
        if taken > start:
            batch.records.extend(records[start:taken])
            batch.bytes = size_so_far
            batch.parts.append((submission, taken - start))
            submission.taken = taken
        return submission.taken == len(records)

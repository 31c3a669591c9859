"""The disk spool: a bounded, durable FIFO of record batches for one sink.

Layout: one SQLite file, ``<state_dir>/spool/<sink>/spool.db``, with one row per
batch (records encoded by ``sinks.codec``, newline-separated). SQLite gives us
atomic appends and removals with a checksummed journal, so a crash mid-write
leaves either the whole batch or nothing; ``synchronous=FULL`` makes every
commit fsync before ``put`` returns, which is what lets the delivery channel
acknowledge a spooled batch.

The bound ``max_bytes`` counts the encoded payload bytes held, not the file
size: SQLite reuses freed pages, so the file stays near the high-water mark of
the payload. Calls are blocking; the channel runs them in a worker thread, one
at a time.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from collector.model import Record
from sinks.codec import decode_record, encode_record

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    records INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    payload BLOB NOT NULL
)
"""


class SpoolFullError(Exception):
    """The batch does not fit under ``max_bytes`` now; nothing was written."""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """The oldest batch in the spool, with the sequence number to remove it by."""

    seq: int
    records: list[Record]
    bytes: int


class DiskSpool:
    """A bounded FIFO of batches that survives restarts."""

    def __init__(self, directory: Path, max_bytes: int, *, sink: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "spool.db"
        self.max_bytes = max_bytes
        self.sink = sink
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(bytes), 0)"
            " FROM batches"
        ).fetchone()
        self.batches, self.records, self.bytes = int(row[0]), int(row[1]), int(row[2])
        # Batches delivered whose rows could not be deleted yet (a full disk
        # refuses even the journal of a DELETE): every seq up to this one is
        # skipped by head() and deleted once the disk lets us.
        self._delivered_up_to = 0

    def __len__(self) -> int:
        return self.batches

    def fits(self, size: int) -> bool:
        """Whether ``size`` more payload bytes stay under the bound."""
        return self.bytes + size <= self.max_bytes

    def put(self, records: Sequence[Record]) -> int:
        """Append one batch durably; returns its payload size.

        Raises ``SpoolFullError`` when it does not fit (nothing is written) and
        ``sqlite3.Error``/``OSError`` when the disk fails.
        """
        payload = b"\n".join(encode_record(r) for r in records)
        if not self.fits(len(payload)):
            raise SpoolFullError(
                f"{len(payload)} bytes do not fit: {self.bytes} of"
                f" {self.max_bytes} bytes used"
            )
        with self._lock:
            self._db.execute(
                "INSERT INTO batches (records, bytes, payload) VALUES (?, ?, ?)",
                (len(records), len(payload), payload),
            )
            self.batches += 1
            self.records += len(records)
            self.bytes += len(payload)
        return len(payload)

    def head(self) -> SpooledBatch | None:
        """The oldest batch, or ``None`` when empty.

        A record that cannot be decoded (disk damage) is logged and left out
        rather than blocking the spool forever.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT seq, payload, bytes FROM batches WHERE seq > ?"
                " ORDER BY seq LIMIT 1",
                (self._delivered_up_to,),
            ).fetchone()
        if row is None:
            return None
        records: list[Record] = []
        for position, line in enumerate(bytes(row[1]).split(b"\n")):
            try:
                records.append(decode_record(line))
            except ValueError as exc:
                log.error(
                    "spool.record_unreadable",
                    sink=self.sink,
                    batch=row[0],
                    position=position,
                    reason=str(exc)[:200],
                )
        return SpooledBatch(int(row[0]), records, int(row[2]))

    def remove(self, batch: SpooledBatch) -> None:
        """Drop the batch once its sink has taken it.

        When the disk is too full to delete, the batch is only marked as
        delivered (head() moves past it) and its row is deleted by a later
        call; a restart before that sends it again (at-least-once).
        """
        with self._lock:
            self._delivered_up_to = max(self._delivered_up_to, batch.seq)
            self.batches -= 1
            self.records -= len(batch.records)
            self.bytes -= batch.bytes
            try:
                self._db.execute(
                    "DELETE FROM batches WHERE seq <= ?", (self._delivered_up_to,)
                )
            except sqlite3.Error as exc:
                log.warning(
                    "spool.remove_deferred",
                    sink=self.sink,
                    batch=batch.seq,
                    reason=str(exc)[:200],
                )

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            self._db.close()

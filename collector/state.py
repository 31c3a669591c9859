"""The embedded state store (SQLite): checkpoints, the dedupe set, and a
namespaced key-value table for detection state and caches.

One file under ``state_dir``; WAL mode so a crash loses at most the last
uncommitted transaction, never corrupts the file. Calls are synchronous: each is
one small transaction on local disk. The pipeline's checkpoint commits are the
exception: ``collector.commits`` groups them and writes them from a thread of
its own, over a second connection (WAL lets readers go on meanwhile).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,
    token BLOB NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_ids (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_ids_age ON seen_ids (seen_at);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires REAL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
SCHEMA_VERSION = "1"
_BUSY_TIMEOUT_MS = 30_000


class StateStore:
    """Checkpoints, seen event ids and key-value state in one SQLite file."""

    def __init__(self, path: Path, *, check_same_thread: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=check_same_thread
        )
        # Two connections write (the loop's and the commit thread's): a writer
        # waits for the other's transaction instead of failing at once.
        self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
            (SCHEMA_VERSION,),
        )

    @classmethod
    def in_dir(cls, state_dir: Path) -> StateStore:
        """The store at ``<state_dir>/state.sqlite``."""
        return cls(state_dir / "state.sqlite")

    def close(self) -> None:
        """Close the database. Idempotent."""
        with contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()

    # Checkpoints

    def load_checkpoint(self, source: str) -> Any | None:
        """The last committed checkpoint of a source, or ``None``."""
        row = self._db.execute(
            "SELECT token FROM checkpoints WHERE source = ?", (source,)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def commit(
        self,
        checkpoints: dict[str, Any],
        seen: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Save checkpoints and record delivered event ids in one transaction.

        ``seen`` holds (event id, source) pairs; they form the dedupe set that
        lets sources re-read an overlap window without sending twice.
        """
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO seen_ids (id, source, seen_at) VALUES (?, ?, ?)",
                ((event_id, source, now) for event_id, source in seen),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO checkpoints (source, token, updated) "
                "VALUES (?, ?, ?)",
                (
                    (name, orjson.dumps(token), now)
                    for name, token in checkpoints.items()
                ),
            )

    # Dedupe set

    def unseen(self, ids: list[str]) -> set[str]:
        """The subset of ``ids`` that has not been delivered yet."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id FROM seen_ids WHERE id IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return set(ids) - found

    def prune_seen(self, older_than_s: float) -> int:
        """Forget delivered ids older than the retention; returns how many."""
        cutoff = time.time() - older_than_s
        cursor = self._db.execute("DELETE FROM seen_ids WHERE seen_at < ?", (cutoff,))
        return cursor.rowcount

    def seen_count(self) -> int:
        """Size of the dedupe set."""
        return int(self._db.execute("SELECT COUNT(*) FROM seen_ids").fetchone()[0])

    # Key-value state

    def kv_get(self, namespace: str, key: str) -> Any | None:
        """A value, or ``None`` when absent or expired."""
        row = self._db.execute(
            "SELECT value, expires FROM kv WHERE namespace = ? AND key = ?",
            (namespace, key),
        ).fetchone()
        if row is None or (row[1] is not None and row[1] < time.time()):
            return None
        return orjson.loads(row[0])

    def kv_put_many(
        self, namespace: str, items: Iterable[tuple[str, Any, float | None]]
    ) -> None:
        """Upsert (key, value, expires-at epoch or None) rows in one transaction."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO kv (namespace, key, value, expires) "
                "VALUES (?, ?, ?, ?)",
                ((namespace, k, orjson.dumps(v), exp) for k, v, exp in items),
            )

    def kv_delete(self, namespace: str, keys: Iterable[str]) -> None:
        """Remove keys from a namespace."""
        with self._transaction():
            self._db.executemany(
                "DELETE FROM kv WHERE namespace = ? AND key = ?",
                ((namespace, key) for key in keys),
            )

    def kv_items(self, namespace: str) -> Iterator[tuple[str, Any]]:
        """Every live (key, value) of a namespace."""
        now = time.time()
        rows = self._db.execute(
            "SELECT key, value FROM kv WHERE namespace = ? "
            "AND (expires IS NULL OR expires >= ?)",
            (namespace, now),
        ).fetchall()
        for key, value in rows:
            yield key, orjson.loads(value)

    def kv_prune(self) -> int:
        """Delete expired rows of every namespace; returns how many."""
        cursor = self._db.execute(
            "DELETE FROM kv WHERE expires IS NOT NULL AND expires < ?", (time.time(),)
        )
        return cursor.rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")

"""Grouped checkpoint commits (collector.commits) behind the ack tracker."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from collector.acks import AckTracker
from collector.commits import CommitWriter
from collector.state import StateStore


class Landed:
    """Records what the writer reported as on disk."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], int]] = []

    def __call__(self, source: str, ids: list[str], batches: int) -> None:
        self.calls.append((source, ids, batches))


def grouped(store: StateStore, **options: float) -> tuple[AckTracker, CommitWriter]:
    """A tracker whose commits go through a writer, wired as the pipeline does."""
    holder: list[AckTracker] = []
    writer = CommitWriter(
        store,
        lambda source, ids, batches: holder[0].landed(source, ids, batches),
        **options,  # type: ignore[arg-type]
    )
    tracker = AckTracker(store, writer=writer)
    holder.append(tracker)
    return tracker, writer


async def test_commits_land_later_and_ids_stay_in_flight(tmp_path: Path) -> None:
    """Until the grouped write lands, the ids are in flight and the checkpoint waits."""
    store = StateStore.in_dir(tmp_path)
    tracker, writer = grouped(store, max_delay=0.2)

    seq = tracker.open("s", {"pos": 1}, ["a", "b"], waiting=1)
    tracker.ack("s", seq)
    before = (store.load_checkpoint("s"), tracker.in_flight("a"))
    await asyncio.sleep(0.5)

    assert before == (None, True)
    assert store.load_checkpoint("s") == {"pos": 1}
    assert store.unseen(["a", "b"]) == set()
    assert not tracker.in_flight("a")
    await writer.aclose()


async def test_many_batches_become_one_write(tmp_path: Path) -> None:
    """Batches acknowledged within the delay are written in one transaction."""
    store = StateStore.in_dir(tmp_path)
    landed = Landed()
    writer = CommitWriter(store, landed, max_delay=0.2)

    for n in range(10):
        writer.add("s", {"pos": n}, [f"id-{n}"], 1)
    await writer.aclose()

    assert landed.calls == [("s", [f"id-{n}" for n in range(10)], 10)]
    assert store.load_checkpoint("s") == {"pos": 9}


async def test_max_ids_writes_without_waiting_for_the_delay(tmp_path: Path) -> None:
    """Reaching max_ids starts the write at once instead of after max_delay."""
    store = StateStore.in_dir(tmp_path)
    landed = Landed()
    writer = CommitWriter(store, landed, max_delay=30, max_ids=3)

    writer.add("s", {"pos": 1}, ["a", "b", "c"], 1)
    for _ in range(100):
        if landed.calls:
            break
        await asyncio.sleep(0.02)

    assert landed.calls == [("s", ["a", "b", "c"], 1)]
    await writer.aclose()


async def test_close_flushes_what_is_queued(tmp_path: Path) -> None:
    """aclose writes the queued commits of every source before returning."""
    store = StateStore.in_dir(tmp_path)
    writer = CommitWriter(store, Landed(), max_delay=60)

    writer.add("s", {"pos": 5}, ["a"], 1)
    writer.add("t", "cursor-9", ["b"], 2)
    await writer.aclose()

    assert store.load_checkpoint("s") == {"pos": 5}
    assert store.load_checkpoint("t") == "cursor-9"
    assert store.unseen(["a", "b"]) == set()


async def test_a_failed_write_is_kept_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (disk full, locked) lands on a later try; nothing is lost."""
    store = StateStore.in_dir(tmp_path)
    landed = Landed()
    writer = CommitWriter(store, landed, max_delay=0.05)
    failures = iter([sqlite3.OperationalError("database or disk is full")])
    real_commit = StateStore.commit

    def flaky(self: StateStore, *args: object) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_commit(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(StateStore, "commit", flaky)
    writer.add("s", {"pos": 1}, ["a"], 1)
    await asyncio.sleep(0.02)
    writer.add("s", {"pos": 2}, ["b"], 1)
    for _ in range(100):
        if landed.calls:
            break
        await asyncio.sleep(0.02)
    await writer.aclose()

    assert [ids for _, ids, _ in landed.calls] == [["a", "b"]]
    assert store.load_checkpoint("s") == {"pos": 2}


async def test_older_checkpoint_never_overwrites_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed group put back in the queue keeps the newer checkpoint on top."""
    store = StateStore.in_dir(tmp_path)
    writer = CommitWriter(store, Landed(), max_delay=0.05)
    started = asyncio.Event()
    newer_queued = threading.Event()
    loop = asyncio.get_running_loop()
    real_commit = StateStore.commit
    calls = 0

    def fail_first(self: StateStore, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # Fail only once the newer commit is queued behind this one.
            loop.call_soon_threadsafe(started.set)
            newer_queued.wait(5)
            raise sqlite3.OperationalError("database is locked")
        real_commit(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(StateStore, "commit", fail_first)
    writer.add("s", {"pos": 1}, ["a"], 1)
    await started.wait()
    writer.add("s", {"pos": 2}, ["b"], 1)
    newer_queued.set()
    await writer.aclose()

    assert store.load_checkpoint("s") == {"pos": 2}


async def test_shutdown_with_a_failing_disk_backs_off_and_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that keep failing are retried with backoff, and aclose is bounded."""
    store = StateStore.in_dir(tmp_path)
    writer = CommitWriter(store, Landed(), max_delay=0.05)
    attempts = 0

    def full_disk(self: StateStore, *args: object) -> None:
        nonlocal attempts
        attempts += 1
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(StateStore, "commit", full_disk)
    writer.add("s", {"pos": 1}, ["a"], 1)
    started = time.monotonic()
    with capture_logs() as logs:
        await writer.aclose(grace=1.0)
    took = time.monotonic() - started

    assert took < 3
    assert 2 <= attempts <= 8  # 0.05, 0.1, 0.2, 0.4, 0.8 s apart, not a spin
    abandoned = [e for e in logs if e["event"] == "state.commits_abandoned"]
    assert abandoned and abandoned[0]["ids"] == 1
    monkeypatch.undo()
    assert store.load_checkpoint("s") is None  # behind: re-read next run


async def test_commits_queued_during_a_slow_write_land_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write longer than max_delay does not strand what was queued meanwhile."""
    store = StateStore.in_dir(tmp_path)
    landed = Landed()
    writer = CommitWriter(store, landed, max_delay=0.1)
    real_commit = StateStore.commit

    def slow(self: StateStore, *args: object) -> None:
        time.sleep(0.5)
        real_commit(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(StateStore, "commit", slow)
    writer.add("s", {"pos": 1}, ["a"], 1)
    await asyncio.sleep(0.2)  # the first write is running now
    writer.add("s", {"pos": 2}, ["b"], 1)
    for _ in range(100):
        if len(landed.calls) == 2:
            break
        await asyncio.sleep(0.05)

    assert [ids for _, ids, _ in landed.calls] == [["a"], ["b"]]
    await writer.aclose()
    assert store.load_checkpoint("s") == {"pos": 2}


async def test_a_commit_after_close_is_still_written(tmp_path: Path) -> None:
    """A sink that acknowledges after shutdown began still moves the checkpoint."""
    store = StateStore.in_dir(tmp_path)
    landed = Landed()
    writer = CommitWriter(store, landed)
    await writer.aclose()

    writer.add("s", {"pos": 7}, ["late"], 1)

    assert landed.calls == [("s", ["late"], 1)]
    assert store.load_checkpoint("s") == {"pos": 7}

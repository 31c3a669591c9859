"""Adversary: CommitWriter / AckTracker under slow and failing writes.

Not collected by default (file name). Run:
    .venv/bin/pytest -p no:cacheprovider tests/adversary/adv_commits.py -q
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import collector.commits as commits_module
from collector.acks import AckTracker
from collector.commits import CommitWriter
from collector.state import StateStore


class Behaviour:
    """What the writer thread's StateStore.commit does (shared, thread-safe)."""

    def __init__(self) -> None:
        self.fail = False
        self.delay = 0.0
        self.calls = 0
        self.lock = threading.Lock()


def patch_store(monkeypatch: pytest.MonkeyPatch, behaviour: Behaviour) -> None:
    """Make the writer's own StateStore slow or failing."""

    class Store(StateStore):
        def commit(self, checkpoints: dict[str, Any], seen: Any = ()) -> None:
            with behaviour.lock:
                behaviour.calls += 1
            if behaviour.delay:
                time.sleep(behaviour.delay)
            if behaviour.fail:
                raise sqlite3.OperationalError("database or disk is full")
            super().commit(checkpoints, seen)

    monkeypatch.setattr(commits_module, "StateStore", Store)


async def test_group_queued_during_a_slow_write_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write slower than max_delay must not strand the group queued meanwhile."""
    behaviour = Behaviour()
    behaviour.delay = 1.0
    patch_store(monkeypatch, behaviour)
    store = StateStore(tmp_path / "state.sqlite")
    landed: list[tuple[str, list[str]]] = []
    writer = CommitWriter(
        store, lambda s, ids, n: landed.append((s, ids)), max_delay=0.2
    )

    writer.add("src", {"pos": 1}, ["a"], 1)
    await asyncio.sleep(0.3)  # first write (1 s) is running now
    writer.add("src", {"pos": 2}, ["b"], 1)  # its timer fires mid-write
    await asyncio.sleep(3.0)
    stored = StateStore(tmp_path / "state.sqlite").load_checkpoint("src")
    ids = [i for _, batch in landed for i in batch]
    await writer.aclose()

    assert ids == ["a", "b"], f"only {ids} landed after 3.3 s; checkpoint {stored}"


async def test_shutdown_with_a_failing_disk_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aclose() while every write fails (disk full): must return or fail, not spin."""
    behaviour = Behaviour()
    behaviour.fail = True
    patch_store(monkeypatch, behaviour)
    store = StateStore(tmp_path / "state.sqlite")
    writer = CommitWriter(store, lambda s, ids, n: None, max_delay=0.2)
    writer.add("src", {"pos": 1}, ["a"], 1)

    began = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.shield(writer.aclose()), 3)
        outcome = "returned"
    except TimeoutError:
        outcome = "still running after 3 s"
    calls = behaviour.calls
    behaviour.fail = False  # let the spinning flush finish so the test ends
    await asyncio.sleep(0.5)

    assert outcome == "returned", f"aclose {outcome}; {calls} commit attempts in 3 s"
    assert calls < 50, f"{calls} commit attempts in {time.monotonic() - began:.1f}s"


async def test_failed_write_then_newer_checkpoint_keeps_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed group requeued behind a newer one never overwrites the newer one."""
    behaviour = Behaviour()
    behaviour.fail = True
    patch_store(monkeypatch, behaviour)
    store = StateStore(tmp_path / "state.sqlite")
    writer = CommitWriter(
        store, lambda s, ids, n: tracker.landed(s, ids, n), max_delay=0.1
    )
    tracker = AckTracker(store, writer=writer)
    first = tracker.open("src", {"pos": 1}, ["a"], 1)
    second = tracker.open("src", {"pos": 2}, ["b"], 1)
    tracker.ack("src", first)
    await asyncio.sleep(0.15)  # the write of pos 1 fails
    tracker.ack("src", second)
    behaviour.fail = False
    await writer.flush()
    await writer.aclose()

    assert StateStore(tmp_path / "state.sqlite").load_checkpoint("src") == {"pos": 2}
    assert not tracker.in_flight("a") and not tracker.in_flight("b")


async def test_ids_stay_in_flight_until_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between ack and landing, an id is in flight or in the store, never neither."""
    behaviour = Behaviour()
    behaviour.delay = 0.05
    patch_store(monkeypatch, behaviour)
    store = StateStore(tmp_path / "state.sqlite")
    writer = CommitWriter(
        store, lambda s, ids, n: tracker.landed(s, ids, n), max_delay=0.01
    )
    tracker = AckTracker(store, writer=writer)
    gaps = 0
    for n in range(200):
        seq = tracker.open("src", {"pos": n}, [f"id{n}"], 1)
        tracker.ack("src", seq)
        for _ in range(3):
            await asyncio.sleep(0.005)
            for k in range(max(0, n - 5), n + 1):
                key = f"id{k}"
                if not tracker.in_flight(key) and store.unseen([key]) == {key}:
                    gaps += 1
    await writer.aclose()
    assert gaps == 0


async def test_ack_after_writer_closed_is_not_silently_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pipeline._shut_down closes the CommitWriter before the channels: an ack that
    lands in between (channel 2 still delivering while channel 1 closes) is added
    to a closed writer. It should be written (or refused loudly), not retried
    against a shut-down executor forever."""
    store = StateStore(tmp_path / "state.sqlite")
    landed: list[str] = []
    writer = CommitWriter(store, lambda s, ids, n: landed.extend(ids), max_delay=0.1)
    writer.add("src", {"pos": 1}, ["a"], 1)
    await writer.aclose()

    writer.add("src", {"pos": 2}, ["b"], 1)  # what a late channel ack does
    await asyncio.sleep(0.5)

    stored = StateStore(tmp_path / "state.sqlite").load_checkpoint("src")
    assert stored == {"pos": 2} and landed == ["a", "b"], (
        f"late commit not written: checkpoint {stored}, landed {landed}"
    )

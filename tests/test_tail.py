"""The rotation-aware tailer: rotation, truncation, checkpoints, bad lines."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from collector.sources.tail import Tailer, TailItem, TailLine, TailSkip, tail_reads


def _lines(items: list[TailItem]) -> list[str]:
    return [i.text for i in items if isinstance(i, TailLine)]


def _read_all(tailer: Tailer, batch: int = 1000) -> list[TailItem]:
    items: list[TailItem] = []
    while True:
        read = tailer.read(batch)
        items.extend(read.items)
        if read.caught_up:
            return items


def _append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, "ab") as handle:
        handle.write(data)


def _touch_older(path: Path, seconds: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def test_reads_complete_lines_and_holds_partial(tmp_path: Path) -> None:
    """A line without its newline is held back until the newline arrives."""
    log = tmp_path / "a.log"
    log.write_text("one\ntw")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")

    first = tailer.read(10)
    _append(log, "o\nthree\n")
    second = _read_all(tailer)

    assert _lines(first.items) == ["one"]
    assert first.caught_up
    assert _lines(second) == ["two", "three"]


def test_line_numbers_and_offsets(tmp_path: Path) -> None:
    """Each line carries its 1-based number and the byte offset where it starts."""
    (tmp_path / "a.log").write_text("ab\n\ncd\r\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")

    items = _read_all(tailer)

    assert [(i.line_no, i.offset) for i in items] == [(1, 0), (3, 4)]
    assert _lines(items) == ["ab", "cd"]


def test_rotation_by_rename_while_reading(tmp_path: Path) -> None:
    """Rename + new file mid-read: the old file is finished first, then the new one."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"old{i}\n" for i in range(10)))
    tailer = Tailer(str(tmp_path / "app*.log"), label="t")

    got = _lines(tailer.read(4).items)
    log.rename(tmp_path / "app-1.log")
    _append(tmp_path / "app-1.log", "old10\n")
    log.write_text("new0\nnew1\n")
    _touch_older(tmp_path / "app-1.log", 5)
    got += _lines(_read_all(tailer))
    got += _lines(_read_all(tailer))

    assert got == [f"old{i}" for i in range(11)] + ["new0", "new1"]


def test_rotation_out_of_glob_is_drained_then_forgotten(tmp_path: Path) -> None:
    """A file renamed out of the glob is read to its end through the open fd."""
    log = tmp_path / "app.log"
    log.write_text("a\nb\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")
    assert _lines(tailer.read(1).items) == ["a"]

    log.rename(tmp_path / "app.log.1")
    log.write_text("c\n")
    with capture_logs() as logs:
        got = _lines(_read_all(tailer))

    assert got == ["b", "c"]
    assert len(tailer.checkpoint()["files"]) == 1
    assert any(e["event"] == "tail.file_forgotten" for e in logs)


def test_deleted_file_is_drained(tmp_path: Path) -> None:
    """A deleted file that still had unread lines is drained before being forgotten."""
    log = tmp_path / "app.log"
    log.write_text("a\nb\nc\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")
    assert _lines(tailer.read(1).items) == ["a"]

    log.unlink()

    assert _lines(_read_all(tailer)) == ["b", "c"]
    assert tailer.checkpoint()["files"] == []


def test_copytruncate_with_copy_in_glob_loses_nothing(tmp_path: Path) -> None:
    """copytruncate: the copy goes on at the old offset, the original restarts at 0."""
    log = tmp_path / "app.log"
    log.write_text("a1\na2\n")
    tailer = Tailer(str(tmp_path / "app*.log"), label="t")
    assert _lines(_read_all(tailer)) == ["a1", "a2"]

    _append(log, "a3\n")
    shutil.copy2(log, tmp_path / "app-1.log")
    with open(log, "r+b") as handle:
        handle.truncate(0)
    _append(log, "b1-longer-than-before\n")

    with capture_logs() as logs:
        got = _lines(_read_all(tailer))

    assert sorted(got) == ["a3", "b1-longer-than-before"]
    events = [e["event"] for e in logs]
    assert "tail.file_replaced" in events
    assert "tail.file_reidentified" in events


def test_copytruncate_detected_as_truncation(tmp_path: Path) -> None:
    """A file that shrinks below the read position is logged and read again from 0."""
    log = tmp_path / "app.log"
    log.write_text("header\n" + "x" * 50 + "\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")
    _read_all(tailer)

    with open(log, "r+b") as handle:
        handle.truncate(7)
    _append(log, "y\n")
    with capture_logs() as logs:
        got = _lines(_read_all(tailer))

    assert got == ["header", "y"]
    assert any(e["event"] == "tail.file_truncated" for e in logs)


def test_restart_from_every_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    """Restarting from each batch's checkpoint yields every line exactly once."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line{i}\n" for i in range(23)) + "partial")
    checkpoint: Any = None
    got: list[str] = []

    for _ in range(20):
        tailer = Tailer(str(tmp_path / "*.log"), label="t")
        tailer.restore(checkpoint)
        read = tailer.read(4)
        tailer.close()
        got += _lines(read.items)
        checkpoint = read.checkpoint
        if read.caught_up:
            break

    assert got == [f"line{i}" for i in range(23)]
    assert checkpoint["files"][0]["offset"] == log.stat().st_size - len("partial")


def test_restart_after_rotation_finds_renamed_file(tmp_path: Path) -> None:
    """A checkpointed file renamed while stopped is found again by inode."""
    log = tmp_path / "app.log"
    log.write_text("a\nb\n")
    tailer = Tailer(str(tmp_path / "app*.log"), label="t")
    checkpoint = tailer.read(1).checkpoint
    tailer.close()

    log.rename(tmp_path / "app-1.log")
    log.write_text("c\n")
    _touch_older(tmp_path / "app-1.log", 5)
    restarted = Tailer(str(tmp_path / "app*.log"), label="t")
    restarted.restore(checkpoint)

    assert _lines(_read_all(restarted)) == ["b", "c"]


def test_inode_reuse_is_detected_by_fingerprint(tmp_path: Path) -> None:
    """A checkpoint whose inode now holds other content reads that file from 0."""
    log = tmp_path / "app.log"
    log.write_text("new content\nmore\n")
    st = log.stat()
    checkpoint = {
        "version": 1,
        "files": [
            {
                "path": str(log),
                "dev": st.st_dev,
                "ino": st.st_ino,
                "fingerprint": "0" * 64,
                "fp_len": 8,
                "offset": 12,
                "line": 1,
            }
        ],
    }
    tailer = Tailer(str(tmp_path / "*.log"), label="t")
    tailer.restore(checkpoint)

    with capture_logs() as logs:
        got = _lines(_read_all(tailer))

    assert got == ["new content", "more"]
    assert any(e["event"] == "tail.file_replaced" for e in logs)


def test_long_line_is_skipped_without_buffering_it(tmp_path: Path) -> None:
    """A line over the limit is skipped and logged with file, line and offset."""
    log = tmp_path / "app.log"
    log.write_text("ok1\n" + "z" * 20_000 + "\nok2\n")
    tailer = Tailer(
        str(tmp_path / "*.log"), label="t", max_line_bytes=1000, chunk_bytes=512
    )

    with capture_logs() as logs:
        items = _read_all(tailer)

    assert _lines(items) == ["ok1", "ok2"]
    skips = [i for i in items if isinstance(i, TailSkip)]
    assert [(s.reason, s.line_no, s.offset) for s in skips] == [("line_too_long", 2, 4)]
    error = next(e for e in logs if e["event"] == "tail.line_too_long")
    assert error["file"] == str(log)
    assert error["line"] == 2
    assert error["offset"] == 4


def test_long_line_in_one_chunk_is_skipped(tmp_path: Path) -> None:
    """An overlong line that arrives whole in one chunk is skipped too."""
    (tmp_path / "a.log").write_text("y" * 300 + "\nok\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t", max_line_bytes=256)

    items = _read_all(tailer)

    assert _lines(items) == ["ok"]
    assert [type(i) for i in items] == [TailSkip, TailLine]


def test_non_utf8_line_is_skipped_and_logged(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 skip only their line, logged with its offset."""
    log = tmp_path / "a.log"
    log.write_bytes(b"good\nbad \xff\xfe here\nafter\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")

    with capture_logs() as logs:
        items = _read_all(tailer)

    assert _lines(items) == ["good", "after"]
    skip = next(i for i in items if isinstance(i, TailSkip))
    assert (skip.reason, skip.line_no, skip.offset) == ("not_utf8", 2, 5)
    error = next(e for e in logs if e["event"] == "tail.line_not_utf8")
    assert error["byte_offset"] == 9


def test_older_files_are_read_first(tmp_path: Path) -> None:
    """Files are read in mtime order, then by name."""
    for name, age in (("c.log", 30), ("a.log", 10), ("b.log", 10)):
        (tmp_path / name).write_text(f"{name}\n")
        _touch_older(tmp_path / name, age)
    tailer = Tailer(str(tmp_path / "*.log"), label="t")

    assert _lines(_read_all(tailer)) == ["c.log", "a.log", "b.log"]


def test_not_from_beginning_starts_at_end(tmp_path: Path) -> None:
    """Without from_beginning, existing files start after their last full line."""
    log = tmp_path / "a.log"
    log.write_text("old1\nold2\npart")
    tailer = Tailer(str(tmp_path / "*.log"), label="t", from_beginning=False)
    assert _read_all(tailer) == []

    _append(log, "ial\nnew\n")
    (tmp_path / "b.log").write_text("fresh\n")

    assert _lines(_read_all(tailer)) == ["partial", "new", "fresh"]


def test_invalid_checkpoint_is_logged_and_ignored(tmp_path: Path) -> None:
    """A checkpoint that cannot be read starts over from the beginning."""
    (tmp_path / "a.log").write_text("x\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")

    with capture_logs() as logs:
        tailer.restore({"version": 99})

    assert _lines(_read_all(tailer)) == ["x"]
    assert logs[0]["event"] == "tail.checkpoint_invalid"


async def test_tail_reads_without_follow_stops_caught_up(tmp_path: Path) -> None:
    """Without follow the driver yields until caught up, then stops."""
    (tmp_path / "a.log").write_text("".join(f"{i}\n" for i in range(5)))
    tailer = Tailer(str(tmp_path / "*.log"), label="t")

    reads = [
        r async for r in tail_reads(tailer, batch_size=2, poll_interval=0, follow=False)
    ]

    assert [len(r.items) for r in reads] == [2, 2, 1]
    assert [r.caught_up for r in reads] == [False, False, True]


async def test_tail_reads_follows_growth(tmp_path: Path) -> None:
    """With follow, lines appended later are picked up by polling."""
    log = tmp_path / "a.log"
    log.write_text("a\n")
    tailer = Tailer(str(tmp_path / "*.log"), label="t")
    got: list[str] = []

    async def consume() -> None:
        async for read in tail_reads(
            tailer, batch_size=10, poll_interval=0.01, follow=True
        ):
            got.extend(_lines(read.items))
            if len(got) >= 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    _append(log, "b\n")
    await asyncio.sleep(0.05)
    _append(log, "c\n")
    await asyncio.wait_for(task, timeout=5)
    tailer.close()

    assert got == ["a", "b", "c"]


@pytest.mark.parametrize("size", [0, 3])
def test_empty_and_tiny_files(tmp_path: Path, size: int) -> None:
    """Files shorter than the fingerprint grow without being mistaken for new ones."""
    log = tmp_path / "a.log"
    log.write_bytes(b"abc"[:size])
    tailer = Tailer(str(tmp_path / "*.log"), label="t", fingerprint_bytes=16)
    _read_all(tailer)

    _append(log, "\nline two is longer than sixteen bytes\n")

    assert _lines(_read_all(tailer)) == (
        ["abc", "line two is longer than sixteen bytes"]
        if size
        else ["line two is longer than sixteen bytes"]
    )

"""The disk spool and the record codec behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.codec import decode_record, encode_record
from sinks.spool import DiskSpool, SpoolFullError
from tests.test_delivery import make_events
from tests.test_render import CONTEXT, first, make_alert


def test_codec_round_trips_event_with_context_and_alert() -> None:
    """Encoded events (with context) and alerts decode to equal records."""
    event = first("permission.granted")
    event.context.update(CONTEXT)
    alert = make_alert()

    assert decode_record(encode_record(event)) == event
    assert decode_record(encode_record(alert)) == alert


def test_codec_rejects_garbage() -> None:
    """Unreadable bytes raise ValueError, not a crash of another kind."""
    with pytest.raises(ValueError, match="unreadable spooled record"):
        decode_record(b'{"k":"e"}')


def test_spool_is_fifo_and_persists(tmp_path: Path) -> None:
    """Batches come back oldest first, also after reopening the file."""
    spool = DiskSpool(tmp_path, 1_000_000, sink="t")
    spool.put(make_events(0, 3))
    spool.put(make_events(3, 2))
    spool.close()

    reopened = DiskSpool(tmp_path, 1_000_000, sink="t")
    assert (reopened.batches, reopened.records) == (2, 5)
    head = reopened.head()
    assert head is not None
    assert [r.id for r in head.records] == ["ev-0", "ev-1", "ev-2"]
    reopened.remove(head)
    second = reopened.head()
    assert second is not None
    assert [r.id for r in second.records] == ["ev-3", "ev-4"]
    reopened.remove(second)
    assert (reopened.batches, reopened.records, reopened.bytes) == (0, 0, 0)
    reopened.close()


def test_spool_refuses_what_does_not_fit(tmp_path: Path) -> None:
    """A batch over max_bytes raises SpoolFullError and writes nothing."""
    spool = DiskSpool(tmp_path, 400, sink="t")

    with pytest.raises(SpoolFullError):
        spool.put(make_events(0, 10))

    assert spool.head() is None
    spool.close()

"""The Splunk HEC sink against our HEC emulator on loopback."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from collector.errors import SinkError
from collector.metrics import Metrics
from collector.plugins import Runtime
from sinks.splunk_hec import (
    HecRetryError,
    SplunkHecSettings,
    SplunkHecSink,
    epoch_decimal,
)
from tests.conftest import closes_after_each_test
from tests.hec_receiver import HecReceiver
from tests.sink_records import make_alert, make_event

TOKEN = "0f5a6c1e-1111-2222-3333-444455556666"


@pytest.fixture
def receiver() -> Iterator[HecReceiver]:
    """A running HEC emulator that accepts ``TOKEN``."""
    hec = HecReceiver(TOKEN)
    hec.start()
    yield hec
    hec.stop()


_OPEN: list[SplunkHecSink] = []


close_sinks = closes_after_each_test(_OPEN)


def make_sink(hec: HecReceiver, **overrides: Any) -> SplunkHecSink:
    """A sink pointed at the emulator (closed after the test)."""
    values: dict[str, Any] = {
        "kind": "splunk_hec",
        "name": "hec",
        "url": hec.url,
        "token": TOKEN,
        "index": "security",
        "timeout": 5,
        "ack_poll_interval": 0.05,
    }
    values.update(overrides)
    sink = SplunkHecSink(SplunkHecSettings(**values))
    _OPEN.append(sink)
    return sink


async def test_events_arrive_once_in_order(receiver: HecReceiver) -> None:
    """Every record sent is indexed exactly once, in order, with a clean envelope."""
    sink = make_sink(receiver)
    records = [make_event(i) for i in range(50)] + [make_alert(1)]

    await sink.send(records)
    await sink.aclose()

    assert receiver.event_ids() == [r.id for r in records]
    assert receiver.silently_dropped == 0
    request = receiver.requests[0]
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == f"Splunk {TOKEN}"
    first = receiver.events[0]
    assert re.match(rb'\{"time":\d+\.\d{6},"', request.body)
    assert first["index"] == "security"
    assert all(isinstance(v, str) for v in first["fields"].values())
    assert receiver.events[-1]["sourcetype"] == "bbaudit:alert:json"


async def test_big_batch_is_gzipped_whole_off_the_loop(receiver: HecReceiver) -> None:
    """A batch above the threaded-gzip size (compressed on a worker thread)
    arrives as one valid gzip body with every event in order."""
    sink = make_sink(receiver)
    records = [make_event(i, note="x" * 400) for i in range(150)]

    await sink.send(records)
    await sink.aclose()

    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["content-encoding"] == "gzip"
    assert receiver.event_ids() == [r.id for r in records]


async def test_body_is_stacked_objects_not_an_array(receiver: HecReceiver) -> None:
    """A batch is JSON objects one after another, one per line, with gzip off."""
    sink = make_sink(receiver, gzip=False)

    await sink.send([make_event(1), make_event(2)])
    await sink.aclose()

    lines = receiver.requests[0].body.split(b"\n")
    assert [json.loads(line)["fields"]["bbaudit_id"] for line in lines] == [
        "ev-000001",
        "ev-000002",
    ]
    assert "content-encoding" not in receiver.requests[0].headers


async def test_partial_batch_resends_only_after_the_invalid_event(
    receiver: HecReceiver,
) -> None:
    """A code 6 on event k keeps 0..k-1, drops k, and resends only k+1 on."""
    receiver.reject_ids = {"ev-000003"}
    sink = make_sink(receiver)
    records = [make_event(i) for i in range(10)]

    with capture_logs() as logs:
        await sink.send(records)

    expected = [r.id for r in records if r.id != "ev-000003"]
    assert receiver.event_ids() == expected
    assert sink.dropped == 1
    assert [r.status for r in receiver.requests] == [400, 200]
    dropped = [e for e in logs if e["event"] == "hec.record_dropped"]
    assert dropped[0]["position"] == 3
    assert dropped[0]["record_id"] == "ev-000003"


async def test_413_splits_the_batch(receiver: HecReceiver) -> None:
    """A request over the receiver's limit is halved until every half fits."""
    receiver.max_content_length = 4000
    sink = make_sink(receiver)
    records = [make_event(i) for i in range(20)]

    await sink.send(records)

    assert receiver.event_ids() == [r.id for r in records]
    assert 413 in [r.status for r in receiver.requests]


async def test_max_batch_bytes_cuts_requests(receiver: HecReceiver) -> None:
    """Requests stay under ``max_batch_bytes`` before gzip."""
    sink = make_sink(receiver, max_batch_bytes=5000)
    records = [make_event(i) for i in range(40)]

    await sink.send(records)

    assert len(receiver.requests) > 1
    assert all(len(r.body) <= 5000 for r in receiver.requests)
    assert receiver.event_ids() == [r.id for r in records]


async def test_ack_polling_waits_for_true() -> None:
    """With acks, ``send`` returns only after every ackId was answered true."""
    hec = HecReceiver(TOKEN, use_ack=True)
    hec.ack_delay = 0.3
    hec.start()
    try:
        sink = make_sink(hec, use_ack=True, ack_timeout=5)
        await sink.send([make_event(i) for i in range(5)])
        await sink.send([make_event(i) for i in range(5, 10)])
    finally:
        hec.stop()

    acks = [r for r in hec.requests if r.path.endswith("/ack")]
    assert len(acks) >= 2
    assert json.loads(acks[-1].body) == {"acks": [1]}
    assert len(hec.event_ids()) == 10
    channels = {r.headers["x-splunk-request-channel"] for r in hec.requests}
    assert len(channels) == 1


async def test_ack_timeout_is_retriable() -> None:
    """An ackId never answered true raises a retriable error at the deadline."""
    hec = HecReceiver(TOKEN, use_ack=True)
    hec.ack_delay = float("inf")
    hec.start()
    try:
        sink = make_sink(hec, use_ack=True, ack_timeout=0.3)
        with pytest.raises(SinkError) as caught:
            await sink.send([make_event(1)])
    finally:
        hec.stop()

    assert caught.value.retriable


async def test_ack_disabled_on_server_falls_back(receiver: HecReceiver) -> None:
    """Ack mode asked of a token without acks is switched off, not an error."""
    sink = make_sink(receiver, use_ack=True)

    await sink.send([make_event(1)])

    assert receiver.event_ids() == ["ev-000001"]


async def test_invalid_token_stops_and_marks_unhealthy(receiver: HecReceiver) -> None:
    """403 code 4 is permanent, marks the sink unhealthy and never logs the token."""
    wrong = "deadbeef-0000-0000-0000-000000000000"
    sink = make_sink(receiver, token=wrong)

    with capture_logs() as logs, pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])

    assert not caught.value.retriable
    assert not sink.healthy
    assert "code 4" in sink.health_detail
    assert any(e["event"] == "hec.sink_stopped" for e in logs)
    assert wrong not in repr(logs) + str(caught.value) + repr(sink._settings)
    assert receiver.event_ids() == []


async def test_disabled_token_is_permanent(receiver: HecReceiver) -> None:
    """403 code 1 (token disabled) is permanent too."""
    receiver.disabled_tokens = {TOKEN}
    sink = make_sink(receiver)

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])

    assert not caught.value.retriable
    assert "code 1" in sink.health_detail


@pytest.mark.parametrize("switch", ["busy", "throttle", "fail500"])
async def test_busy_and_throttled_are_retriable(
    receiver: HecReceiver, switch: str
) -> None:
    """503 code 9, 429 and 500 are retriable; the batch goes through afterwards."""
    if switch == "busy":
        receiver.busy = True
    elif switch == "throttle":
        receiver.throttle = True
    else:
        receiver.fail_status = (500, 1)
    sink = make_sink(receiver)

    with pytest.raises(HecRetryError) as caught:
        await sink.send([make_event(1)])
    receiver.busy = receiver.throttle = False
    await sink.send([make_event(1)])

    assert caught.value.retriable
    assert receiver.event_ids() == ["ev-000001"]


async def test_stopped_receiver_is_retriable_and_recovers(
    receiver: HecReceiver,
) -> None:
    """Connection refused is retriable; after a restart the same sink delivers."""
    sink = make_sink(receiver)
    receiver.stop()

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])
    receiver.start()
    await sink.send([make_event(1)])
    await sink.aclose()

    assert caught.value.retriable
    assert receiver.event_ids() == ["ev-000001"]


async def test_slow_receiver_times_out_retriably(receiver: HecReceiver) -> None:
    """A receiver slower than the timeout gives a retriable error."""
    receiver.delay = 1.0
    sink = make_sink(receiver, timeout=0.2)

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(1)])
    await sink.aclose()

    assert caught.value.retriable


async def test_dropped_records_are_counted(receiver: HecReceiver) -> None:
    """A dropped record increments the sink's dropped metric with its reason."""
    metrics = Metrics()
    # The HEC sink uses only the runtime's metrics.
    runtime = Runtime(
        state_dir=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        metrics=metrics,
    )
    receiver.reject_ids = {"ev-000000"}
    settings = SplunkHecSettings(
        kind="splunk_hec", name="hec", url=receiver.url, token=TOKEN, index="main"
    )
    sink = SplunkHecSink(settings, runtime)
    _OPEN.append(sink)

    await sink.send([make_event(0), make_event(1)])

    value = metrics.registry.get_sample_value(
        "bbaudit_sink_records_dropped_total", {"sink": "hec", "reason": "invalid"}
    )
    assert value == 1
    assert receiver.event_ids() == ["ev-000001"]


def test_epoch_decimal_is_fixed_point() -> None:
    """``time`` has six decimals and never an exponent, before 1970 too."""
    moment = datetime(2021, 11, 27, 17, 34, 26, 108000, tzinfo=UTC)

    assert epoch_decimal(moment) == "1638034466.108000"
    assert epoch_decimal(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == (
        "-1.000000"
    )


def test_gzip_body_round_trips(receiver: HecReceiver) -> None:
    """The envelope bytes are valid JSON with the record under ``event``."""
    sink = make_sink(receiver)

    data = sink.envelope(make_alert(2, note='|="]\n'))

    envelope = json.loads(gzip.decompress(gzip.compress(data)))
    assert envelope["event"]
    assert set(envelope) == {
        "time",
        "host",
        "source",
        "sourcetype",
        "index",
        "fields",
        "event",
    }


def test_ack_mode_extends_the_send_timeout() -> None:
    """With acks the delivery ``send_timeout`` covers the ack wait, or is refused."""
    base: dict[str, Any] = {
        "kind": "splunk_hec",
        "url": "http://127.0.0.1:1",
        "token": TOKEN,
    }

    settings = SplunkHecSettings(**base, use_ack=True, ack_timeout=300)

    assert settings.send_timeout > settings.ack_timeout + settings.timeout
    with pytest.raises(ValueError, match="send_timeout must be longer"):
        SplunkHecSettings(**base, use_ack=True, send_timeout=30)


async def test_retry_after_is_passed_on(receiver: HecReceiver) -> None:
    """A 503 with ``Retry-After`` gives its value (capped) on the error."""
    receiver.busy = True
    receiver.retry_after = "7"
    sink = make_sink(receiver)

    with pytest.raises(HecRetryError) as caught:
        await sink.send([make_event(1)])

    assert caught.value.retry_after == 7.0

"""100k events through HEC and syslog behind the delivery channel, with outages.

Each volume test pushes 100k small events through a ``DeliveryChannel`` with a
disk spool (as ``collector.app`` builds it) into a real receiver, stops the
receiver for 30 s in the middle of the stream, starts it again on the same
port, and reads every id back from what the receiver kept. Duplicates are
allowed only up to one batch: the batch in flight when the receiver went away
may have been taken before the answer was lost, and is then sent again.

HEC answers every request, so its receiver is stopped mid-stream with batches
in flight. Syslog over TCP/TLS has no answers (RFC 6587/5425): rsyslog stopped
with our bytes in its socket buffer discards them although the kernel took
them, so the TCP/TLS volume tests stop rsyslog once it wrote what was sent, and
the mid-stream stop is a separate test marked xfail (see its reason). RELP
answers every message, so its volume tests stop rsyslog mid-stream, like HEC.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.metrics import Metrics
from collector.model import Record
from sinks.delivery import DeliveryChannel
from sinks.splunk_hec import SplunkHecSettings, SplunkHecSink
from sinks.syslog import SyslogSink, SyslogSinkSettings
from tests.hec_receiver import HecReceiver
from tests.sink_records import make_alert, make_event
from tests.syslog_receivers import Rsyslog, loopback_settings, pki, rsyslog

__all__ = ["pki", "rsyslog"]  # fixtures used by name below

TOKEN = "0f5a6c1e-1111-2222-3333-444455556666"
TOTAL = 100_000
CHUNK = 500
BEFORE, DURING = 30_000, 40_000
OUTAGE_S = 30.0
AWKWARD = 'a\nb\r\nc | d = e ] f " g \\ h ü 中 🙂 \u2028 end'
BIG = "x€" * 7000  # about 21 KB of UTF-8
DELIVERY: dict[str, Any] = {
    "batch_max_records": CHUNK,
    "batch_max_wait": 0.05,
    "queue_max_batches": 8,
    "send_timeout": 10.0,
    "retry_initial": 0.2,
    "retry_max": 1.0,
    "spool_after_attempts": 2,
    "spool_after": 5.0,
}
_SD_ID = re.compile(rb'\[bbaudit@32473 id="([^"]+)"')


@dataclass
class Outcome:
    """What one volume run measured."""

    seconds: float
    spooled_during_outage: int
    spool_peak: int
    spool_left: int
    healthy_during_outage: bool


class SpoolWatch:
    """Samples the channel's spool depth every 50 ms to find its peak."""

    def __init__(self, channel: DeliveryChannel) -> None:
        self.peak = 0
        self._channel = channel
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self._channel.spool_records)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop sampling (after one last sample)."""
        self.peak = max(self.peak, self._channel.spool_records)
        self._task.cancel()
        await asyncio.wait({self._task})


def events(start: int, count: int) -> list[Record]:
    """Events ``ev-<start>`` .. ``ev-<start+count-1>``."""
    return [make_event(i) for i in range(start, start + count)]


async def submit_all(channel: DeliveryChannel, records: list[Record]) -> None:
    """Submit in pipeline-sized chunks (waits only while the queue is full)."""
    for start in range(0, len(records), CHUNK):
        await channel.submit(records[start : start + CHUNK], lambda: None)


async def wait_spool_empty(channel: DeliveryChannel, within: float) -> int:
    """Wait until the spool drained; the records still in it."""
    for _ in range(int(within * 10)):
        if not channel.spool_records:
            break
        await asyncio.sleep(0.1)
    return channel.spool_records


async def run_with_outage(
    channel: DeliveryChannel,
    stop: Callable[[], None],
    start: Callable[[], None],
    settle: Callable[[], Awaitable[None]] | None = None,
) -> Outcome:
    """30k events, receiver stopped for 30 s while 40k more come, then 30k.

    Without ``settle`` the receiver stops mid-stream (batches queued or in
    flight); with it, once everything was sent and ``settle`` returned.
    """
    began = time.monotonic()
    await channel.start()
    watch = SpoolWatch(channel)
    try:
        await submit_all(channel, events(0, BEFORE))
        if settle is not None:
            await asyncio.wait_for(channel.drain(), 30)
            await settle()
        await asyncio.to_thread(stop)
        stopped = time.monotonic()
        await submit_all(channel, events(BEFORE, DURING))
        await asyncio.wait_for(channel.drain(), OUTAGE_S - 2)
        spooled, healthy = channel.spool_records, channel.healthy
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))

        await asyncio.to_thread(start)
        await submit_all(channel, events(BEFORE + DURING, TOTAL - BEFORE - DURING))
        await asyncio.wait_for(channel.drain(), 30)
        left = await wait_spool_empty(channel, 30)
    finally:
        await watch.stop()
        await channel.aclose()

    return Outcome(time.monotonic() - began, spooled, watch.peak, left, healthy)


def check(outcome: Outcome, received: list[str], label: str) -> None:
    """Every id arrived, duplicates stay within one batch, the spool drained."""
    counts = Counter(received)
    duplicates = len(received) - len(counts)
    sent = {f"ev-{i:06d}" for i in range(TOTAL)}
    print(
        f"\n{label}: {outcome.seconds:.1f} s, sent {len(sent)}, received"
        f" {len(received)} ({len(counts)} distinct, {duplicates} duplicates),"
        f" spooled during outage {outcome.spooled_during_outage}, spool peak"
        f" {outcome.spool_peak}, left {outcome.spool_left}"
    )

    assert outcome.spooled_during_outage > 0
    assert not outcome.healthy_during_outage
    assert outcome.spool_left == 0
    assert sorted(sent - set(counts))[:10] == []
    assert set(counts) == sent
    assert duplicates <= CHUNK


# ---- Splunk HEC ----


def hec_settings(receiver: HecReceiver, **overrides: Any) -> SplunkHecSettings:
    """HEC sink settings for the emulator, delivery tuned for the test."""
    values: dict[str, Any] = {
        "kind": "splunk_hec",
        "name": "hec",
        "url": receiver.url,
        "token": TOKEN,
        "index": "security",
        "timeout": 5,
        **DELIVERY,
    }
    values.update(overrides)
    return SplunkHecSettings(**values)


@pytest.mark.slow
async def test_hec_100k_with_outage_loses_nothing(tmp_path: Path) -> None:
    """100k events reach HEC across a 30 s outage; the spool took and drained it."""
    receiver = HecReceiver(TOKEN)
    receiver.start()
    settings = hec_settings(receiver)
    channel = DeliveryChannel(
        SplunkHecSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )
    try:
        outcome = await run_with_outage(channel, receiver.stop, receiver.start)
    finally:
        receiver.stop()

    check(outcome, receiver.event_ids(), "hec")
    assert receiver.silently_dropped == 0


async def test_hec_awkward_values_arrive_intact() -> None:
    """Newlines, |, =, ], quotes, non-ASCII and 20 KB values: one envelope each."""
    receiver = HecReceiver(TOKEN)
    receiver.start()
    sink = SplunkHecSink(hec_settings(receiver, format="raw"))
    records: list[Record] = [
        make_event(1, note=AWKWARD + BIG),
        make_alert(2, note=AWKWARD),
        make_event(3, note=AWKWARD),
    ]
    try:
        await sink.send(records)
    finally:
        await sink.aclose()
        receiver.stop()

    assert receiver.event_ids() == [r.id for r in records]
    documents = [e["event"] for e in receiver.events]
    assert documents[0]["attributes"]["note"] == AWKWARD + BIG
    assert documents[1]["summary"] == "Many clones" + AWKWARD
    assert documents[2]["actor"]["name"] == "alice" + AWKWARD


# ---- syslog through rsyslog ----


def syslog_settings(port: int, transport: str, pki_ca: Path) -> SyslogSinkSettings:
    """Syslog sink settings to rsyslog on loopback, delivery tuned for the test."""
    tls: dict[str, Any] = {}
    if transport in ("tls", "relp_tls"):
        tls = {"ca_file": str(pki_ca), "server_name": "localhost"}
    return loopback_settings(port, transport, **DELIVERY, **tls)


def port_of(receiver: Rsyslog, transport: str) -> int:
    """rsyslog's port for a transport."""
    ports = {
        "tcp": receiver.tcp_port,
        "tls": receiver.tls_port,
        "relp": receiver.relp_port,
        "relp_tls": receiver.relp_tls_port,
    }
    return ports[transport]


def received_ids(receiver: Rsyslog) -> tuple[int, list[str]]:
    """(lines in rsyslog's raw output, the record id found on each line)."""
    data = receiver.raw_file.read_bytes()
    lines = data.split(b"\n")[:-1]
    ids = [m.group(1).decode() for line in lines if (m := _SD_ID.search(line))]
    return len(lines), ids


async def wait_for_lines(receiver: Rsyslog, count: int, within: float) -> None:
    """Wait until rsyslog wrote ``count`` lines, or wrote nothing more for 5 s."""
    deadline = time.monotonic() + within
    last, quiet_since = 0, time.monotonic()
    while time.monotonic() < deadline:
        size = receiver.raw_file.stat().st_size if receiver.raw_file.exists() else 0
        if size != last:
            last, quiet_since = size, time.monotonic()
            if received_ids(receiver)[0] >= count:
                return
        elif size and time.monotonic() - quiet_since > 5:
            return
        await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_syslog_100k_with_outage_loses_nothing(
    rsyslog: Rsyslog, transport: str, tmp_path: Path
) -> None:
    """100k events reach rsyslog over TCP/TLS across a 30 s outage of rsyslog."""
    port = rsyslog.tcp_port if transport == "tcp" else rsyslog.tls_port
    settings = syslog_settings(port, transport, rsyslog.pki.ca)
    channel = DeliveryChannel(
        SyslogSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )

    async def settle() -> None:
        await wait_for_lines(rsyslog, BEFORE, 30)

    outcome = await run_with_outage(channel, rsyslog.stop, rsyslog.start, settle)
    await wait_for_lines(rsyslog, TOTAL, 30)
    lines, ids = received_ids(rsyslog)

    assert lines == len(ids)
    check(outcome, ids, f"syslog/{transport}")


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["relp", "relp_tls"])
async def test_relp_100k_with_mid_stream_outage_loses_nothing(
    rsyslog: Rsyslog, transport: str, tmp_path: Path
) -> None:
    """100k events over RELP, rsyslog stopped mid-stream for 30 s: none is missing."""
    settings = syslog_settings(port_of(rsyslog, transport), transport, rsyslog.pki.ca)
    channel = DeliveryChannel(
        SyslogSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )

    outcome = await run_with_outage(channel, rsyslog.stop, rsyslog.start)
    await wait_for_lines(rsyslog, TOTAL, 30)
    lines, ids = received_ids(rsyslog)

    assert lines == len(ids)
    check(outcome, ids, f"syslog/{transport}")


async def test_relp_100k_arrive_with_exactly_the_same_ids(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    """100k events over RELP: rsyslog has each id exactly once, in order."""
    settings = syslog_settings(rsyslog.relp_port, "relp", rsyslog.pki.ca)
    # ECS renders about 3x faster than raw, which keeps this test under 20 s.
    settings = settings.model_copy(update={"format": "ecs"})
    channel = DeliveryChannel(
        SyslogSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )
    began = time.monotonic()
    await channel.start()
    try:
        await submit_all(channel, events(0, TOTAL))
        await asyncio.wait_for(channel.drain(), 60)
    finally:
        await channel.aclose()
    sent = time.monotonic() - began
    await wait_for_lines(rsyslog, TOTAL, 30)
    lines, ids = received_ids(rsyslog)
    print(f"\nsyslog/relp: {TOTAL} events confirmed in {sent:.1f} s")

    assert lines == len(ids) == TOTAL
    assert ids == [f"ev-{i:06d}" for i in range(TOTAL)]


@pytest.mark.xfail(
    reason=(
        "RFC 6587/5425 syslog has no acks: on SIGTERM rsyslog closes its sessions"
        " without reading what its kernel already accepted (the peer sees a RST),"
        " but send() returned once the local kernel took the bytes, so the batch"
        " written around the stop is lost (measured: 500 of 100k, both TCP and"
        " TLS). Not strict: whether bytes are in flight at the stop is a race."
        " The fix is transport: relp or relp_tls (acknowledged per message), see"
        " test_relp_stop_mid_stream_loses_nothing."
    ),
    strict=False,
)
async def test_syslog_stop_mid_stream_loses_nothing(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    """rsyslog stopped while batches are in flight: every id should still arrive."""
    await stop_mid_stream(rsyslog, "tcp", tmp_path)


@pytest.mark.parametrize("transport", ["relp", "relp_tls"])
async def test_relp_stop_mid_stream_loses_nothing(
    rsyslog: Rsyslog, transport: str, tmp_path: Path
) -> None:
    """Over RELP, rsyslog stopped while batches are in flight loses no id."""
    await stop_mid_stream(rsyslog, transport, tmp_path)


async def stop_mid_stream(rsyslog: Rsyslog, transport: str, tmp_path: Path) -> None:
    """Send 10k, stop rsyslog, queue 5k, start it: assert all 15k arrived."""
    settings = syslog_settings(port_of(rsyslog, transport), transport, rsyslog.pki.ca)
    channel = DeliveryChannel(
        SyslogSink(settings), settings, Metrics(), spool_dir=tmp_path / "spool"
    )
    await channel.start()
    try:
        await submit_all(channel, events(0, 10_000))
        await asyncio.to_thread(rsyslog.stop)
        await submit_all(channel, events(10_000, 5_000))
        await asyncio.wait_for(channel.drain(), 20)
        await asyncio.to_thread(rsyslog.start)
        left = await wait_spool_empty(channel, 20)
    finally:
        await channel.aclose()
    await wait_for_lines(rsyslog, 15_000, 20)
    lines, ids = received_ids(rsyslog)

    assert left == 0
    assert lines == len(ids)
    assert set(ids) == {f"ev-{i:06d}" for i in range(15_000)}
    assert len(ids) - 15_000 <= CHUNK


async def test_tls_awkward_values_arrive_intact(rsyslog: Rsyslog) -> None:
    """Over verified TLS, awkward and 20 KB values arrive as one line each."""
    settings = syslog_settings(rsyslog.tls_port, "tls", rsyslog.pki.ca)
    sink = SyslogSink(settings.model_copy(update={"max_stream_bytes": 200 * 1024}))
    records: list[Record] = [
        make_event(1, note=AWKWARD + BIG),
        make_event(2, note=AWKWARD),
    ]
    try:
        await sink.send(records)
        lines = await rsyslog.wait_for(2, 15)
    finally:
        await sink.aclose()

    assert len(lines) == 2
    assert 'truncated="true"' not in lines[0]
    notes = [json.loads(line.split("] ", 1)[1])["attributes"]["note"] for line in lines]
    assert notes == [AWKWARD + BIG, AWKWARD]


async def test_tls_oversized_value_is_cut_and_marked(rsyslog: Rsyslog) -> None:
    """Over TLS a message beyond ``max_stream_bytes`` arrives once, marked truncated."""
    settings = syslog_settings(rsyslog.tls_port, "tls", rsyslog.pki.ca)
    sink = SyslogSink(settings)
    try:
        await sink.send([make_event(1, note=BIG * 4), make_event(2)])
        lines = await rsyslog.wait_for(2, 15)
    finally:
        await sink.aclose()

    assert [line.count("bbaudit@32473") for line in lines] == [1, 1]
    assert 'truncated="true"' in lines[0]
    assert 'truncated="true"' not in lines[1]
    assert len(lines[0].encode("utf-8")) <= 64 * 1024
    assert "\ufffd" not in lines[0]

"""The syslog sink's client certificates against rsyslog inputs that require one.

rsyslog listens twice with mutual TLS (see ``tests.syslog_receivers``): imtcp
with the ossl driver in ``x509/certvalid`` mode (``mtls_port``) and imrelp with
``tls.authMode="certvalid"`` (``relp_mtls_port``); both trust only the test CA.
A sink with a client certificate from that CA must get through; a sink without
one, or with one from another CA, must deliver nothing and must not be told
that it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

import pytest

from collector.errors import SinkError
from collector.metrics import Metrics
from collector.model import Record
from sinks.delivery import DeliveryChannel
from sinks.syslog import SyslogSink
from tests.conftest import closes_after_each_test
from tests.sink_records import make_event
from tests.syslog_receivers import Pki, Rsyslog, loopback_settings, pki, rsyslog

__all__ = ["pki", "rsyslog"]  # fixtures used by name below

_ID = re.compile(r'\[bbaudit@32473 id="([^"]+)"')
# What rsyslog logs when it refuses a client: no certificate at all, or one
# that does not chain to its CA (imtcp/ossl and imrelp/librelp word it alike).
_REFUSED = re.compile(
    r"peer did not return a certificate|certificate verify failed"
    r"|unable to get local issuer certificate|certificate required"
)
_QUIET_S = 1.0  # how long nothing must arrive after a refused send

_OPEN: list[SyslogSink] = []


close_sinks = closes_after_each_test(_OPEN)


def client_files(pki: Pki, which: str) -> dict[str, Any]:
    """Sink settings for the client certificate ``which``: ours, other or none."""
    if which == "ours":
        return {"client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    if which == "other":
        return {
            "client_cert": str(pki.other_client_cert),
            "client_key": str(pki.other_client_key),
        }
    return {}


def mtls_settings(rsyslog: Rsyslog, transport: str, which: str) -> dict[str, Any]:
    """Settings to the mutual-TLS port of ``transport``, verifying rsyslog."""
    port = rsyslog.mtls_port if transport == "tls" else rsyslog.relp_mtls_port
    return {
        "port": port,
        "transport": transport,
        "ca_file": str(rsyslog.pki.ca),
        "server_name": "localhost",
        **client_files(rsyslog.pki, which),
    }


def make_sink(rsyslog: Rsyslog, transport: str, which: str) -> SyslogSink:
    """A sink to rsyslog's mutual-TLS input, closed after the test."""
    values = mtls_settings(rsyslog, transport, which)
    port = values.pop("port")
    sink = SyslogSink(loopback_settings(port, **values))
    _OPEN.append(sink)
    return sink


def ids(lines: list[str]) -> list[str]:
    """The record ids of the messages rsyslog wrote."""
    return [m.group(1) for line in lines if (m := _ID.search(line))]


def refusals(rsyslog: Rsyslog) -> list[str]:
    """rsyslogd's own log lines that say it refused a client certificate."""
    path: Path = rsyslog.work / "rsyslogd.out"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if _REFUSED.search(line)]


async def wait_for_refusal(rsyslog: Rsyslog, within: float = 5.0) -> list[str]:
    """Wait until rsyslogd logged a refused client certificate."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := refusals(rsyslog):
            return found
        await asyncio.sleep(0.05)
    return refusals(rsyslog)


async def deliver_briefly(values: dict[str, Any]) -> tuple[bool, bool]:
    """Submit records through a fast-retrying channel for 3 s: (acked, healthy)."""
    port = values.pop("port")
    config = loopback_settings(
        port,
        **values,
        timeout=2,
        retry_initial=0.05,
        retry_max=0.2,
        batch_max_wait=0.01,
        spool_after_attempts=2,
    )
    channel = DeliveryChannel(SyslogSink(config), config, Metrics())
    acked = asyncio.Event()

    await channel.start()
    try:
        await channel.submit([make_event(i) for i in range(5)], acked.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.drain(), 3)
        healthy = channel.healthy
    finally:
        await channel.aclose()

    return acked.is_set(), healthy


async def send_quietly(sink: SyslogSink, records: list[Record]) -> SinkError | None:
    """Send; the ``SinkError`` raised, or None if the sink reported success."""
    try:
        await sink.send(records)
    except SinkError as exc:
        return exc
    return None


# ---- transport: tls (imtcp, ossl, x509/certvalid) ----


async def test_tls_client_cert_from_the_ca_is_accepted(rsyslog: Rsyslog) -> None:
    """With a client certificate signed by the CA, every message arrives."""
    sink = make_sink(rsyslog, "tls", "ours")
    records: list[Record] = [make_event(i) for i in range(50)]

    await sink.send(records[:25])
    await sink.send(records[25:])
    lines = await rsyslog.wait_for(len(records))

    assert ids(lines) == [r.id for r in records]
    assert sink.healthy
    assert refusals(rsyslog) == []


@pytest.mark.parametrize("which", ["none", "other"])
async def test_tls_refused_client_delivers_nothing(
    rsyslog: Rsyslog, which: str
) -> None:
    """Without a client certificate, or with another CA's, rsyslog takes nothing
    and every send fails for good, naming the refused certificate."""
    sink = make_sink(rsyslog, "tls", which)

    errors = []
    for start in (0, 10, 20):
        batch: list[Record] = [make_event(i) for i in range(start, start + 10)]
        errors.append(await send_quietly(sink, batch))
    found = await wait_for_refusal(rsyslog)
    await asyncio.sleep(_QUIET_S)

    assert rsyslog.lines() == []
    assert found
    for error in errors:
        assert error is not None
        assert not error.retriable
        assert "client certificate" in str(error)


@pytest.mark.parametrize("which", ["none", "other"])
async def test_tls_refused_client_is_never_acknowledged(
    rsyslog: Rsyslog, which: str
) -> None:
    """Through the delivery channel the records stay unacknowledged."""
    acked, healthy = await deliver_briefly(mtls_settings(rsyslog, "tls", which))

    assert rsyslog.lines() == []
    assert not acked
    assert not healthy


# ---- transport: relp_tls (imrelp, tls.authMode certvalid) ----


async def test_relp_tls_client_cert_from_the_ca_is_accepted(rsyslog: Rsyslog) -> None:
    """Over RELP with a client certificate signed by the CA, all is confirmed."""
    sink = make_sink(rsyslog, "relp_tls", "ours")
    records: list[Record] = [make_event(i) for i in range(300)]

    await sink.send(records)
    lines = await rsyslog.wait_for(len(records))

    assert ids(lines) == [r.id for r in records]
    assert sink.healthy
    assert refusals(rsyslog) == []


@pytest.mark.parametrize("which", ["none", "other"])
async def test_relp_tls_refused_client_fails_the_send(
    rsyslog: Rsyslog, which: str
) -> None:
    """Without an accepted client certificate nothing is confirmed: send raises a
    permanent error (retrying cannot fix a certificate)."""
    sink = make_sink(rsyslog, "relp_tls", which)

    with pytest.raises(SinkError) as caught:
        await sink.send([make_event(i) for i in range(10)])
    found = await wait_for_refusal(rsyslog)
    await asyncio.sleep(_QUIET_S)

    assert "client certificate" in str(caught.value)
    assert not caught.value.retriable
    assert rsyslog.lines() == []
    assert found


async def test_relp_tls_refused_client_is_never_acknowledged(
    rsyslog: Rsyslog,
) -> None:
    """Through the delivery channel the records stay unacknowledged, sink unhealthy."""
    acked, healthy = await deliver_briefly(mtls_settings(rsyslog, "relp_tls", "none"))

    assert rsyslog.lines() == []
    assert not acked
    assert not healthy

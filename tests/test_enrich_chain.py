"""The enrichment chain: timeouts and failures mark events, never raise."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from collector.metrics import Metrics
from collector.model import Actor, AuditEvent
from collector.plugins import ENRICHERS
from enrichers.chain import EnrichmentChain


def event() -> AuditEvent:
    """A plain audit event."""
    return AuditEvent(
        id="e1",
        time=datetime(2026, 5, 1, tzinfo=UTC),
        platform="dc",
        instance="bb",
        source_kind="test",
        action="repo.cloned",
        category="repository",
        actor=Actor(name="alice", kind="human"),
        source_ip="10.0.0.1",
    )


class Stub:
    """An enricher that sleeps, raises or tags, as told."""

    def __init__(self, name: str, *, sleep: float = 0, fail: bool = False) -> None:
        self.name = name
        self.sleep = sleep
        self.fail = fail
        self.closed = False

    async def start(self) -> None:
        """Start, or fail to."""
        if self.fail:
            raise RuntimeError("cannot start")

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Tag the events after an optional delay or failure."""
        await asyncio.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("boom")
        for ev in events:
            ev.context.setdefault("seen", []).append(self.name)

    async def aclose(self) -> None:
        """Remember the close."""
        self.closed = True


async def test_failure_and_timeout_mark_events_and_flow_on(metrics: Metrics) -> None:
    """A failing and a slow enricher mark events; the others still run."""
    chain = EnrichmentChain(
        [Stub("bad", fail=True), Stub("slow", sleep=5), Stub("good")], metrics, 0.05
    )
    events = [event(), event()]

    await chain.enrich(events)

    assert events[1].context["enrichment_errors"] == [
        "bad: RuntimeError: boom",
        "slow: timed out after 0.05s",
    ]
    assert events[1].context["seen"] == ["good"]
    assert metrics.enrichment_errors.labels(enricher="bad")._value.get() == 1
    assert metrics.enrichment_errors.labels(enricher="slow")._value.get() == 1


async def test_start_and_close_survive_failures(metrics: Metrics) -> None:
    """A failing start is logged; close reaches every enricher."""
    stubs = [Stub("bad", fail=True), Stub("good")]
    chain = EnrichmentChain(stubs, metrics)

    await chain.start()
    await chain.aclose()

    assert all(stub.closed for stub in stubs)


async def test_empty_batch_is_a_no_op(metrics: Metrics) -> None:
    """An empty batch calls no enricher."""
    chain = EnrichmentChain([Stub("bad", fail=True)], metrics)

    await chain.enrich([])

    assert metrics.enrichment_errors.labels(enricher="bad")._value.get() == 0


def test_registered_kinds() -> None:
    """Every enricher kind is registered under its config name."""
    kinds = {"geoip", "identity_file", "identity_scim", "repo_tags", "zones"}

    assert kinds <= set(ENRICHERS.kinds())

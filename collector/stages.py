"""The contracts between pipeline stages: what sources, enrichers, the detector
and sinks promise to the pipeline, and what the pipeline hands them.

Plugins implement these protocols; the pipeline (``collector.pipeline``) only
ever talks to them through these methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.model import Alert, AuditEvent, Record


@dataclass(slots=True)
class SourceBatch:
    """Audit events read in one step, with the checkpoint that covers them.

    ``checkpoint`` is a JSON-serializable token the source gets back on restart
    once every sink has acknowledged this batch (and every batch before it);
    ``None`` means the batch does not move the checkpoint. ``rejected`` counts
    records that could not be parsed (already logged and counted by the source).
    ``caught_up`` is set on the last batch of a pass when the source has read
    everything there was to read at that moment.
    """

    source: str
    events: list[AuditEvent]
    checkpoint: Any = None
    rejected: int = 0
    caught_up: bool = False


class Source(Protocol):
    """Reads audit records from one place and yields normalized batches."""

    name: str
    kind: str

    def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Yield batches from ``checkpoint`` on.

        With ``follow`` the source polls or tails forever (until cancelled);
        without, it stops after one pass once caught up. Errors it can recover
        from are retried inside; a record it cannot parse is logged, counted and
        skipped; it never raises for bad input.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and file handles. Idempotent."""
        ...


class Enricher(Protocol):
    """Adds context to audit events (identity, geo, zones, repository tags)."""

    name: str

    async def start(self) -> None:
        """Load data or open clients; failure here is logged, not fatal."""
        ...

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Add fields under ``event.context[<own key>]`` for each event.

        May raise; the pipeline then marks the events in
        ``context["enrichment_errors"]`` and lets them flow on.
        """
        ...

    async def aclose(self) -> None:
        """Stop background work. Idempotent."""
        ...


class Detector(Protocol):
    """Runs the detection rules over enriched audit events."""

    async def start(self) -> None:
        """Load persisted state."""
        ...

    async def detect(self, events: Sequence[AuditEvent]) -> list[Alert]:
        """Return the alerts these events raise (possibly none)."""
        ...

    async def flush(self) -> None:
        """Persist state now (called periodically and before checkpoints)."""
        ...

    async def aclose(self) -> None:
        """Flush and close. Idempotent."""
        ...


class Sink(Protocol):
    """Delivers records to one receiver. Batching, retry and spooling are not
    the sink's job: the delivery machinery in ``sinks.delivery`` wraps it.
    """

    name: str

    async def start(self) -> None:
        """Connect. May raise ``SinkError``; the delivery layer retries."""
        ...

    async def send(self, records: Sequence[Record]) -> None:
        """Deliver all of ``records`` or raise ``SinkError`` (``retriable`` says
        whether the same batch may be sent again). Returning means acknowledged.
        """
        ...

    async def aclose(self) -> None:
        """Flush and disconnect. Idempotent."""
        ...


@dataclass(slots=True)
class Routed:
    """A batch on its way to the sinks, with what it covers for checkpointing."""

    records: list[Record]
    checkpoints: list[tuple[str, int]] = field(default_factory=list)

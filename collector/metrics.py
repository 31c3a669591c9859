"""Prometheus metrics: one registry per process, injectable for tests.

The pipeline's own metrics are attributes of ``Metrics``; a plugin that needs
more asks for them with ``counter``/``gauge``/``histogram``, which return the
existing metric when the name is already registered (several instances of one
plugin kind share their metrics and tell themselves apart by labels).
Label values are bounded: source and sink names come from the config, never
from audit data.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# Without this every counter also exports a *_created series, doubling the
# number of series a scrape returns for no use of ours.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

M = TypeVar("M", Counter, Gauge, Histogram)


class Metrics:
    """The metrics of one bbaudit process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._by_name: dict[str, Any] = {}

        self.events_read = self.counter(
            "bbaudit_events_read_total",
            "Audit events read from a source, before dedupe.",
            ["source"],
        )
        self.events_rejected = self.counter(
            "bbaudit_events_rejected_total",
            "Source records that could not be parsed, by reason.",
            ["source", "reason"],
        )
        self.events_deduped = self.counter(
            "bbaudit_events_deduped_total",
            "Audit events dropped because they were already delivered.",
            ["source"],
        )
        self.events_filtered = self.counter(
            "bbaudit_events_filtered_total",
            "Audit events filtered on purpose (the collector's own searches).",
            ["source"],
        )
        self.records_written = self.counter(
            "bbaudit_records_written_total",
            "Records acknowledged by a sink.",
            ["sink", "kind"],
        )
        self.records_dropped = self.counter(
            "bbaudit_sink_records_dropped_total",
            "Records a sink refused for good (logged with their id), by reason.",
            ["sink", "reason"],
        )
        self.enrichment_errors = self.counter(
            "bbaudit_enrichment_errors_total",
            "Enricher calls that failed or timed out.",
            ["enricher"],
        )
        self.alerts = self.counter(
            "bbaudit_alerts_total", "Alerts raised, by rule.", ["rule"]
        )
        self.queue_depth = self.gauge(
            "bbaudit_queue_depth", "Batches waiting between stages.", ["queue"]
        )
        self.checkpoint_commits = self.counter(
            "bbaudit_checkpoint_commits_total", "Checkpoint commits.", ["source"]
        )

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        """A counter, created once per name."""
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: list[str]) -> Gauge:
        """A gauge, created once per name."""
        return self._get(Gauge, name, doc, labels)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: list[str],
        buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram, created once per name."""
        if name not in self._by_name:
            self._by_name[name] = Histogram(
                name, doc, labels, registry=self.registry, buckets=buckets
            )
        return self._by_name[name]  # type: ignore[no-any-return]

    def _get(self, kind: type[M], name: str, doc: str, labels: list[str]) -> M:
        existing = self._by_name.get(name)
        if existing is None:
            existing = kind(name, doc, labels, registry=self.registry)
            self._by_name[name] = existing
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name} already registered as another type")
        return existing

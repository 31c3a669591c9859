"""Runs the configured enrichers in order over each batch, failures contained.

An enricher that raises or overruns its time budget never stops a batch: its
events are marked in ``context["enrichment_errors"]`` with ``"<name>: <reason>"``,
the failure is counted in ``bbaudit_enrichment_errors_total{enricher}``, and the
next enricher runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.stages import Enricher
from enrichers.context import mark_errors

logger = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 5.0


class EnrichmentChain:
    """The enrichers of one pipeline, applied in config order."""

    def __init__(
        self,
        enrichers: Sequence[Enricher],
        metrics: Metrics,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.enrichers = list(enrichers)
        self.timeout_s = timeout_s
        self._errors = metrics.enrichment_errors

    async def start(self) -> None:
        """Start every enricher; one that fails to start is logged and kept."""
        for enricher in self.enrichers:
            try:
                await asyncio.wait_for(enricher.start(), self.timeout_s * 6)
            except Exception as exc:  # start failure is not fatal
                logger.error(
                    "enrich.start_failed",
                    enricher=enricher.name,
                    error=_describe(exc),
                )

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Run every enricher over ``events``; never raises (except cancellation)."""
        if not events:
            return
        for enricher in self.enrichers:
            await self._run_one(enricher, events)

    async def aclose(self) -> None:
        """Close every enricher, even when one fails to close."""
        for enricher in self.enrichers:
            try:
                await enricher.aclose()
            except Exception as exc:  # closing must reach all
                logger.warning(
                    "enrich.close_failed", enricher=enricher.name, error=_describe(exc)
                )

    async def _run_one(self, enricher: Enricher, events: Sequence[AuditEvent]) -> None:
        try:
            await asyncio.wait_for(enricher.enrich(events), self.timeout_s)
            return
        except TimeoutError:
            reason = f"timed out after {self.timeout_s:g}s"
        except Exception as exc:  # any enricher bug is contained
            reason = _describe(exc)

        mark_errors(events, enricher.name, reason)
        self._errors.labels(enricher=enricher.name).inc()
        logger.warning(
            "enrich.batch_failed",
            enricher=enricher.name,
            events=len(events),
            reason=reason,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

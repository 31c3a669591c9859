"""The detection engine: routes each audit event to the rules that consume its
action, turns findings into alerts (suppressed per rule and key), aggregates
risk per actor, and persists its state in the ``StateStore``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from collector.metrics import Metrics
from collector.model import Alert, AuditEvent, Severity
from collector.plugins import Runtime
from collector.state import StateStore
from detections.alerting import RISK_BY_SEVERITY, build_alert
from detections.rules import EVENT_RULES, BaseRule, RiskAggregation
from detections.rules.base import (
    ANY_ACTION,
    DetectionState,
    Finding,
    RuleMeta,
    actor_key,
    tried_username,
)
from detections.settings import EngineSettings
from detections.sigma import (
    BUILTIN_DIR,
    SigmaDetection,
    SigmaLoadError,
    field_view,
    load_sigma,
    routing_key,
)

logger = structlog.get_logger(__name__)

_BASELINE_RULES = frozenset({"bb.new_source_ip", "bb.new_country", "bb.new_asn"})


def build_rules(settings: EngineSettings) -> list[BaseRule]:
    """The enabled built-in event rules."""
    return [cls(settings) for cls in EVENT_RULES if settings.rule(cls.META.id).enabled]


def sigma_dirs(settings: EngineSettings) -> list[Any]:
    """Where Sigma rules are read from: the bundled SigmaHQ set, then config."""
    return ([BUILTIN_DIR] if settings.sigma_builtin else []) + list(settings.sigma_dirs)


class DetectionEngine:
    """Implements ``collector.stages.Detector``."""

    def __init__(
        self,
        settings: EngineSettings,
        store: StateStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = build_rules(settings)
        self.risk = self._risk_rule(settings)
        sigma, self.sigma_errors = load_sigma(sigma_dirs(settings))
        self.sigma = [s for s in sigma if settings.rule(s.meta.id).enabled]
        self.state = DetectionState(settings)
        self._routes: dict[str, tuple[BaseRule, ...]] = {}
        self._sigma_routes = self._index_sigma(self.sigma)
        self._track_first_seen = any(r.META.id in _BASELINE_RULES for r in self.rules)
        self._metrics = metrics or Metrics()
        self._suppressed = self._metrics.counter(
            "bbaudit_alerts_suppressed_total",
            "Findings held back because the same rule and key alerted recently.",
            ["rule"],
        )
        self._errors = self._metrics.counter(
            "bbaudit_detection_errors_total",
            "Rule evaluations that failed on malformed input (event skipped).",
            ["rule"],
        )
        self._children: dict[tuple[int, str], Any] = {}
        self._last_flush = time.monotonic()
        self._closed = False

    @property
    def metas(self) -> list[RuleMeta]:
        """Metadata of every active rule (built-in, aggregation, Sigma)."""
        metas = [rule.META for rule in self.rules]
        metas += [self.risk.META] if self.risk else []
        return metas + [s.meta for s in self.sigma]

    async def start(self) -> None:
        """Load persisted state."""
        if self.store is not None:
            self.state.load(self.store)
        logger.info(
            "detection.started",
            rules=len(self.rules) + (self.risk is not None),
            sigma_rules=len(self.sigma),
            sigma_errors=len(self.sigma_errors),
        )

    async def detect(self, events: Sequence[AuditEvent]) -> list[Alert]:
        """Alerts these events raise, in event order."""
        if not self.settings.enabled:
            return []
        alerts: list[Alert] = []
        for event in events:
            alerts.extend(self.process(event))
        if time.monotonic() - self._last_flush >= self.settings.flush_interval:
            await self.flush()
        return alerts

    def process(self, event: AuditEvent) -> list[Alert]:
        """Run every routed rule over one event (synchronous core of ``detect``)."""
        ts = event.time.timestamp()
        user = actor_key(event)
        if self._track_first_seen and user is not None:
            self.state.first_seen.observe(user, ts)

        alerts: list[Alert] = []
        state = self.state
        rules = self._routes.get(event.action) or self._route(event.action)
        for rule in rules:
            try:
                findings = rule.evaluate(event, ts, user, state)
            except (AttributeError, TypeError, ValueError, KeyError) as exc:
                # Malformed context from an enricher must not stop detection.
                self._failed(rule.META.id, event, exc)
                continue
            for finding in findings:
                self._emit(rule.META, finding, event, ts, alerts)
        for detection in self._sigma_for(event):
            self._emit_sigma(detection, event, ts, alerts)
        if self.risk is not None and alerts:
            self._aggregate(alerts, event, ts)
        return alerts

    async def flush(self) -> None:
        """Persist state now."""
        self._last_flush = time.monotonic()
        if self.store is None or self._closed:
            return
        written = self.state.flush(self.store)
        logger.debug("detection.flushed", keys=written)

    async def aclose(self) -> None:
        """Flush and stop. Idempotent."""
        if self._closed:
            return
        await self.flush()
        self._closed = True

    def _route(self, action: str) -> tuple[BaseRule, ...]:
        rules = self._routes.get(action)
        if rules is None:
            rules = tuple(
                r
                for r in self.rules
                if action in r.META.consumes or ANY_ACTION in r.META.consumes
            )
            self._routes[action] = rules
        return rules

    def _sigma_for(self, event: AuditEvent) -> tuple[SigmaDetection, ...]:
        routed, always = self._sigma_routes
        found = routed.get(routing_key(event), ())
        return found + always if always else found

    def _emit_sigma(
        self,
        detection: SigmaDetection,
        event: AuditEvent,
        ts: float,
        alerts: list[Alert],
    ) -> None:
        actor = sigma_subject(event)
        if self.state.suppressions.active(detection.meta.id, actor, ts):
            # A repeat within the window: skip the matching work (not counted
            # as suppressed, since it may not have matched at all).
            return
        if not detection.matches(field_view(event)):
            return
        what = event.raw_action or event.action
        finding = Finding(
            key=actor,
            anchor=event.id,
            summary=f"{detection.meta.name}: {actor} ({what})",
            evidence=(event.id,),
            actor=actor,
            details={"sigma_file": detection.path.name},
        )
        self._emit(detection.meta, finding, event, ts, alerts)

    def _aggregate(self, alerts: list[Alert], event: AuditEvent, ts: float) -> None:
        assert self.risk is not None
        for alert in list(alerts):
            finding = self.risk.observe(alert, ts, self.state)
            if finding is not None:
                self._emit(self.risk.META, finding, event, ts, alerts)

    def _emit(
        self,
        meta: RuleMeta,
        finding: Finding,
        event: AuditEvent,
        ts: float,
        alerts: list[Alert],
    ) -> None:
        overrides = self.settings.rule(meta.id)
        suppressions = self.state.suppressions
        if suppressions.active(meta.id, finding.key, ts):
            self._counter(self._suppressed, meta.id).inc()
            return

        window = overrides.suppression or self.settings.suppression_window
        suppressions.hold(meta.id, finding.key, ts + window)
        severity, risk = self._grade(meta, finding)
        alerts.append(
            build_alert(
                rule_id=meta.id,
                rule_name=meta.name,
                severity=severity,
                risk_score=risk,
                techniques=meta.techniques,
                event=event,
                time=event.time,
                key=finding.key,
                anchor=finding.anchor,
                summary=finding.summary,
                evidence=finding.evidence[: self.settings.max_evidence],
                actor=finding.actor or actor_key(event) or event.actor.name,
                details=finding.details,
                author=meta.author,
                references=meta.references,
            )
        )
        self._counter(self._metrics.alerts, meta.id).inc()

    def _failed(self, rule_id: str, event: AuditEvent, exc: Exception) -> None:
        self._counter(self._errors, rule_id).inc()
        logger.warning(
            "detection.rule_failed",
            rule_id=rule_id,
            audit_event_id=event.id,
            error=type(exc).__name__,
        )

    def _counter(self, family: Any, rule_id: str) -> Any:
        """The labelled child of a counter, cached: ``labels()`` is slow."""
        key = (id(family), rule_id)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(rule=rule_id)
        return child

    def _grade(self, meta: RuleMeta, finding: Finding) -> tuple[Severity, int]:
        overrides = self.settings.rule(meta.id)
        if overrides.severity is not None:
            severity = overrides.severity
            risk = overrides.risk_score or RISK_BY_SEVERITY[severity]
            return severity, risk
        severity = finding.severity or meta.severity
        risk = overrides.risk_score or finding.risk_score or meta.risk_score
        return severity, risk

    @staticmethod
    def _risk_rule(settings: EngineSettings) -> RiskAggregation | None:
        enabled = settings.rule(RiskAggregation.META.id).enabled
        return RiskAggregation(settings) if enabled else None

    @staticmethod
    def _index_sigma(
        detections: list[SigmaDetection],
    ) -> tuple[dict[str, tuple[SigmaDetection, ...]], tuple[SigmaDetection, ...]]:
        routed: dict[str, tuple[SigmaDetection, ...]] = {}
        always: list[SigmaDetection] = []
        for detection in detections:
            if detection.actions is None:
                always.append(detection)
                continue
            for action in detection.actions:
                routed[action] = (*routed.get(action, ()), detection)
        return routed, tuple(always)


def create_engine(settings: EngineSettings, runtime: Runtime) -> DetectionEngine:
    """The ``engine`` detector factory: state from ``runtime.store``."""
    return DetectionEngine(settings, runtime.store, runtime.metrics)


__all__ = ["DetectionEngine", "SigmaLoadError", "build_rules", "create_engine"]


def sigma_subject(event: AuditEvent) -> str:
    """Who a Sigma alert is about, and so what its suppression is keyed on.

    The acting user; for an anonymous author (a failed Data Center login is
    written by "Anonymous") the user name that was tried. Keyed on the
    author, one failure anywhere would silence the rule for every user for
    the whole suppression window.
    """
    actor = actor_key(event)
    if actor is not None:
        return actor
    tried = tried_username(event) if event.actor.kind == "anonymous" else None
    return tried or (event.actor.name or "unknown").lower()

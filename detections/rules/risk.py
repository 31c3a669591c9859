"""bb.risk_aggregation: several different alerts on one actor within an hour."""

from __future__ import annotations

from collector.model import Alert
from detections.alerting import severity_for_risk
from detections.rules.base import DetectionState, Finding, RuleMeta
from detections.settings import EngineSettings


class RiskAggregation:
    """Sums risk over distinct rule ids per actor; fed with alerts, not events."""

    META = RuleMeta(
        id="bb.risk_aggregation",
        name="Risk pile-up on one actor",
        description=(
            "Alerts from several distinct rules on one actor within the window; "
            "the alert's risk is the sum of the strongest score per rule."
        ),
        severity="high",
        risk_score=73,
        techniques=(),
        consumes=frozenset({"alert"}),
        limitations=(
            "Only sees alerts raised by this engine; alerts suppressed as repeats "
            "still count. Actors are matched by name, so one person with two "
            "accounts is two actors."
        ),
        runbook="Read the evidence alerts together; they often tell one story.",
    )

    def __init__(self, settings: EngineSettings) -> None:
        o = settings.rule(self.META.id)
        self.threshold = o.threshold or 3
        self.span = o.window or 3600.0
        self.max_evidence = settings.max_evidence

    def observe(self, alert: Alert, ts: float, state: DetectionState) -> Finding | None:
        """Add an alert to its actor's list; a finding when enough rules agree."""
        if not alert.actor or alert.rule_id == self.META.id:
            return None
        entries = [
            e for e in state.risk.get(alert.actor) or () if ts - e[0] <= self.span
        ]
        first_event = alert.evidence[0] if alert.evidence else ""
        entries.append([ts, alert.rule_id, alert.risk_score, alert.id, first_event])
        state.risk.put(alert.actor, entries)

        best: dict[str, int] = {}
        for _, rule_id, score, *_ in entries:
            best[rule_id] = max(best.get(rule_id, 0), int(score))
        if len(best) < self.threshold:
            return None

        return self._finding(alert.actor, entries, best)

    def _finding(
        self, actor: str, entries: list[list[object]], best: dict[str, int]
    ) -> Finding:
        risk = min(100, sum(best.values()))
        return Finding(
            key=actor,
            anchor=str(entries[0][3]),
            summary=(
                f"{actor} raised {len(best)} different alerts within "
                f"{self.span / 60:g} min (risk {risk})"
            ),
            evidence=tuple(dict.fromkeys(str(e[4]) for e in entries if e[4]))[
                : self.max_evidence
            ],
            severity=severity_for_risk(risk),
            risk_score=risk,
            actor=actor,
            details={"rules": sorted(best), "alerts": [str(e[3]) for e in entries]},
        )

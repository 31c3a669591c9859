"""bb.risk_aggregation: several different alerts on one actor within an hour."""

from __future__ import annotations

from collector.model import Alert
from detections.alerting import severity_for_risk
from detections.rules.base import DetectionState, Finding, RuleMeta
from detections.settings import EngineSettings

_NOT_AN_ACTOR = frozenset({"anonymous", "system", "unknown"})
_LOCATION_RULES = (
    "bb.new_source_ip",
    "bb.new_country",
    "bb.new_asn",
    "bb.ip_outside_allowlist",
    "bb.impossible_travel",
)
_FAMILY = {rule: "location" for rule in _LOCATION_RULES}


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
            "do not count. Actors are matched by name, so one person with two "
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
        """Add an alert to its actor's record; a finding when enough rules agree.

        The record keeps one entry per rule (its strongest recent alert), so it
        stays as small as the rule set however many alerts an actor raises.
        """
        # Anonymous and system "actors" are many people or none: piling their
        # unrelated alerts onto one name would invent an incident.
        if not alert.actor or alert.actor.lower() in _NOT_AN_ACTOR:
            return None
        if alert.rule_id == self.META.id:
            return None
        record = {
            rule: entry
            for rule, entry in (state.risk.get(alert.actor) or {}).items()
            if ts - entry[0] <= self.span
        }
        first_event = alert.evidence[0] if alert.evidence else ""
        entry = [ts, alert.risk_score, alert.id, first_event]
        # Rules that see one fact from several angles (a login from a new
        # place is a new IP, ASN, country and outside the allowlist) count
        # once, as their family, so one odd login is not "several alerts".
        family = _FAMILY.get(alert.rule_id, alert.rule_id)
        kept = record.get(family)
        if kept is None or alert.risk_score >= kept[1]:
            record[family] = entry
        state.risk.put(alert.actor, record)
        if len(record) < self.threshold:
            return None

        return self._finding(alert.actor, record)

    def _finding(self, actor: str, record: dict[str, list[object]]) -> Finding:
        risk = min(100, sum(int(str(e[1])) for e in record.values()))
        entries = sorted(record.values(), key=lambda e: float(str(e[0])))
        return Finding(
            key=actor,
            anchor=str(entries[0][2]),
            summary=(
                f"{actor} raised {len(record)} kinds of alert within "
                f"{self.span / 60:g} min (risk {risk})"
            ),
            evidence=tuple(dict.fromkeys(str(e[3]) for e in entries if e[3]))[
                : self.max_evidence
            ],
            severity=severity_for_risk(risk),
            risk_score=risk,
            actor=actor,
            details={
                "rule_families": sorted(record),
                "alerts": [str(e[2]) for e in entries],
            },
        )

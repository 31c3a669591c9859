"""bb.mass_clone: many repositories cloned, fetched or archived by one actor."""

from __future__ import annotations

from collections.abc import Sequence

from collector.model import AuditEvent
from detections.rules.base import (
    NO_FINDINGS,
    BaseRule,
    DetectionState,
    Finding,
    RuleMeta,
    context_map,
)
from detections.settings import EngineSettings

_PRIVATE_TAGS = frozenset({"private", "sensitive", "restricted", "confidential"})


class MassClone(BaseRule):
    """Distinct repositories per actor over a sliding window (all, and private)."""

    META = RuleMeta(
        id="bb.mass_clone",
        name="Mass repository clone by one actor",
        description=(
            "One actor cloned, fetched or downloaded as an archive many distinct "
            "repositories in a short window; private or sensitive repositories "
            "have a lower threshold."
        ),
        severity="medium",
        risk_score=47,
        techniques=("T1213.003", "T1567.001"),
        consumes=frozenset({"repo.cloned", "repo.fetched", "repo.archived"}),
        limitations=(
            "Data Center does not write clones to the audit log: needs the access "
            "log source. Cloud has no clone events. CI and service accounts clone "
            "many repositories by design; exclude them via identity enrichment."
        ),
        runbook=(
            "Check the actor's role and source IP; if not a build agent, revoke "
            "their tokens and review which repositories left."
        ),
    )

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        o = self.overrides
        self.threshold = o.threshold or 25
        self.span = o.window or 540.0
        self.private_threshold = o.secondary_threshold or 10
        self.private_span = o.secondary_window or 360.0

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Fire when the distinct repository count reaches a threshold."""
        repo = _repository(event) if user is not None else None
        if user is None or repo is None:
            return NO_FINDINGS

        found = self._check(user, "all", repo, event, ts, state)
        if found is None and _is_private(event):
            found = self._check(user, "private", repo, event, ts, state)
        return (found,) if found is not None else NO_FINDINGS

    def _check(
        self,
        user: str,
        scope: str,
        repo: str,
        event: AuditEvent,
        ts: float,
        state: DetectionState,
    ) -> Finding | None:
        private = scope == "private"
        span = self.private_span if private else self.span
        window = state.windows.add(
            f"{self.META.id}\x1f{scope}\x1f{user}",
            ts,
            repo,
            event.id,
            span_s=span,
            lateness_s=self.lateness,
        )
        threshold = self.private_threshold if private else self.threshold
        if window is None or window.distinct < threshold:
            return None
        if self.held_back(state, user, ts):
            return None

        kind = "private repositories" if private else "repositories"
        return Finding(
            key=user,
            anchor=window.first_id(),
            summary=(
                f"{user} cloned, fetched or archived {window.distinct} distinct {kind} "
                f"in {span / 60:g} min"
            ),
            evidence=window.event_ids(self.max_evidence),
            severity="high" if private else None,
            risk_score=73 if private else None,
            details={"distinct_repositories": window.distinct, "scope": scope},
        )


def _repository(event: AuditEvent) -> str | None:
    for target in event.targets:
        if target.type == "REPOSITORY" and target.name:
            return target.name
    return None


def _is_private(event: AuditEvent) -> bool:
    if "repo" not in event.context:
        return False
    repo = context_map(event, "repo")
    sensitivity = str(repo.get("sensitivity") or "").lower()
    tags = {str(tag).lower() for tag in repo.get("tags") or ()}
    return sensitivity in _PRIVATE_TAGS or bool(tags & _PRIVATE_TAGS)

"""bb.brute_force and bb.inactive_identity: who is (not) supposed to log in."""

from __future__ import annotations

from collections.abc import Sequence

from collector.model import AuditEvent
from detections.rules.base import (
    ANY_ACTION,
    NO_FINDINGS,
    BaseRule,
    DetectionState,
    Finding,
    RuleMeta,
    context_map,
    tried_username,
)
from detections.settings import EngineSettings
from detections.state import join_key


class BruteForce(BaseRule):
    """Failed logins per user and per source IP over a sliding window."""

    META = RuleMeta(
        id="bb.brute_force",
        name="Brute force: many failed logins",
        description=(
            "Failed logins reach the threshold for one user name or one source "
            "IP; a success for that user right after raises the severity."
        ),
        severity="medium",
        risk_score=47,
        techniques=("T1110",),
        consumes=frozenset({"auth.login_failed", "auth.login"}),
        limitations=(
            "Data Center logs failed logins only at Advanced coverage; the "
            "attempted name comes from the 'target' attribute when the author "
            "is Anonymous. Slow sprays below the threshold pass."
        ),
        runbook=(
            "Block the source IP at the edge; if a success followed, reset the "
            "user's password and end their sessions."
        ),
    )

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        o = self.overrides
        self.threshold = o.threshold or 20
        self.span = o.window or 3600.0
        self.ip_threshold = o.secondary_threshold or self.threshold
        self.ip_span = o.secondary_window or self.span

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Count failures; on a success, look at the user's recent failures."""
        user = user if user is not None else tried_username(event)
        if event.action == "auth.login":
            return self._success(event, user, ts, state)

        found = []
        if user is not None:
            found.append(self._count("user", user, event, ts, state))
        if event.source_ip:
            found.append(self._count("ip", event.source_ip, event, ts, state))
        return tuple(f for f in found if f is not None)

    def _count(
        self, scope: str, who: str, event: AuditEvent, ts: float, state: DetectionState
    ) -> Finding | None:
        by_ip = scope == "ip"
        span = self.ip_span if by_ip else self.span
        window = state.windows.add(
            join_key(self.META.id, scope, who),
            ts,
            event.id,
            event.id,
            span_s=span,
            lateness_s=self.lateness,
        )
        threshold = self.ip_threshold if by_ip else self.threshold
        if window is None or window.count < threshold:
            return None
        if self.held_back(state, f"{scope}:{who}", ts):
            return None

        return Finding(
            key=f"{scope}:{who}",
            anchor=window.first_id(),
            summary=(
                f"{window.count} failed logins for {scope} {who} in {span / 60:g} min"
            ),
            evidence=window.event_ids(self.max_evidence),
            actor=None if by_ip else who,
            details={"failures": window.count, "scope": scope},
        )

    def _success(
        self, event: AuditEvent, user: str | None, ts: float, state: DetectionState
    ) -> Sequence[Finding]:
        window = state.windows.get(join_key(self.META.id, "user", user or ""))
        if user is None or window is None or window.count < self.threshold:
            return NO_FINDINGS
        if self.held_back(state, f"success:{user}", ts):
            return NO_FINDINGS
        recent = [item for item in window.items if ts - item[0] <= self.span]
        if len(recent) < self.threshold:
            return NO_FINDINGS

        return (
            Finding(
                key=f"success:{user}",
                anchor=recent[0][2],
                summary=f"{user} logged in after {len(recent)} failed attempts",
                evidence=(*window.event_ids(self.max_evidence - 1), event.id),
                severity="high",
                risk_score=73,
                actor=user,
                details={"failures": len(recent), "succeeded": True},
            ),
        )


class InactiveIdentity(BaseRule):
    """Activity by a user the directory marks terminated or suspended."""

    META = RuleMeta(
        id="bb.inactive_identity",
        name="Activity by a terminated or suspended identity",
        description=(
            "The identity enricher found the actor in the directory with status "
            "terminated or suspended, yet they acted in Bitbucket."
        ),
        severity="high",
        risk_score=73,
        techniques=("T1078",),
        consumes=frozenset({ANY_ACTION}),
        limitations=(
            "Needs the identity enricher and a current directory export; "
            "unmatched accounts (local, service) are not judged."
        ),
        runbook=(
            "Disable the Bitbucket account and its tokens and SSH keys; review "
            "everything it did since the termination date."
        ),
    )

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Fire when the directory status is terminated or suspended."""
        identity = event.context.get("identity")
        if not identity or user is None:
            return NO_FINDINGS
        status = context_map(event, "identity").get("status")
        if status not in ("terminated", "suspended"):
            return NO_FINDINGS

        # Keyed per target too: each repository a departed identity touches is
        # its own finding, not hidden behind the first one's suppression.
        target = _main_target(event)
        return (
            Finding(
                key=f"{user}|{event.action}|{target}",
                anchor=event.id,
                summary=f"{status} identity {user} performed {event.action}"
                + _on_what(event),
                evidence=(event.id,),
                severity="high" if status == "terminated" else "medium",
                risk_score=73 if status == "terminated" else 47,
                actor=user,
                details={"status": status},
            ),
        )


def _on_what(event: AuditEvent) -> str:
    """`` on PROJ/repo (restricted)`` for the first named target, or nothing."""
    target = _main_target(event)
    if not target:
        return ""
    sensitivity = context_map(event, "repo").get("sensitivity")
    suffix = f" ({sensitivity})" if sensitivity else ""
    return f" on {target}{suffix}"


def _main_target(event: AuditEvent) -> str:
    """The repository acted on if there is one, else the first named target."""
    names = [t.name for t in event.targets if t.name and t.type == "REPOSITORY"]
    names += [t.name for t in event.targets if t.name]
    return names[0] if names else ""

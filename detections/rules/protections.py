"""bb.protection_disabled: audit coverage cut, secret scanning weakened, and more."""

from __future__ import annotations

import re
from collections.abc import Sequence

from collector.model import AuditEvent, Change, Severity
from detections.rules.base import (
    NO_FINDINGS,
    BaseRule,
    DetectionState,
    Finding,
    RuleMeta,
    actor_key,
)
from detections.settings import EngineSettings

_LEVELS = {"off": 0, "none": 0, "base": 1, "basic": 1, "advanced": 2, "full": 3}
_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_DURATION = re.compile(r"(\d+)\s*(day|week|month|year)s?", re.IGNORECASE)

# Single-event actions that always weaken a control, with their severity.
_ALWAYS: dict[str, tuple[Severity, str]] = {
    "secret_scanning.rule_deleted": ("medium", "deleted a secret scanning rule"),
    "secret_scanning.exemption_added": (
        "high",
        "exempted a repository from secret scanning",
    ),
    "secret_scanning.allowlist_added": ("low", "added a secret scanning allowlist"),
    "settings.ssh_changed": ("medium", "changed SSH settings"),
    "repo.branch_permission_removed": ("medium", "removed branch permissions"),
    "repo.merge_check_disabled": ("medium", "disabled a merge check"),
    "settings.2sv_disabled": ("critical", "disabled two-step verification"),
    "settings.ip_allowlist_disabled": ("high", "disabled IP allowlisting"),
}
_RISK: dict[str, int] = {"low": 21, "medium": 47, "high": 73, "critical": 99}


class ProtectionDisabled(BaseRule):
    """A security control switched off or weakened."""

    META = RuleMeta(
        id="bb.protection_disabled",
        name="Security protection disabled or weakened",
        description=(
            "Audit coverage lowered or retention cut, secret scanning rules "
            "deleted or repositories exempted, SSH settings changed, branch "
            "permissions or merge checks removed, 2SV or IP allowlisting "
            "disabled, a security app disabled."
        ),
        severity="medium",
        risk_score=47,
        techniques=("T1562.001", "T1685"),
        consumes=frozenset({"audit.config_changed", "app.disabled", *_ALWAYS}),
        limitations=(
            "Audit configuration changes without a 'from' value cannot be judged "
            "(the Sigma rule still reports them). Branch permission and merge "
            "check action names are unverified for Data Center. Security apps "
            "are matched by the configured names only."
        ),
        runbook=(
            "Ask the actor for the change ticket; restore the control and "
            "review activity during the gap."
        ),
    )

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.security_apps = frozenset(a.lower() for a in settings.security_apps)

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Judge the event by its action."""
        verdict = _ALWAYS.get(event.action)
        if event.action == "audit.config_changed":
            verdict = _audit_verdict(event.changes)
        elif event.action == "app.disabled":
            verdict = self._app_verdict(event)
        if verdict is None:
            return NO_FINDINGS

        severity, what = verdict
        actor = actor_key(event) or (event.actor.name or "unknown").lower()
        return (
            Finding(
                key=f"{actor}|{event.action}",
                anchor=event.id,
                summary=f"{actor} {what}",
                evidence=(event.id,),
                severity=severity,
                risk_score=_RISK[severity],
                actor=actor,
                details={"action": event.action},
            ),
        )

    def _app_verdict(self, event: AuditEvent) -> tuple[Severity, str] | None:
        names = [t.name or "" for t in event.targets]
        names.append(event.attributes.get("target", ""))
        app = next((n for n in names if n.lower() in self.security_apps), None)
        return ("high", f"disabled security app {app}") if app else None


def _audit_verdict(changes: Sequence[Change]) -> tuple[Severity, str] | None:
    for change in changes:
        dropped = _coverage_drop(change) or _retention_cut(change)
        if dropped is not None:
            return dropped
    return None


def _coverage_drop(change: Change) -> tuple[Severity, str] | None:
    old, new = _level(change.old), _level(change.new)
    if old is None or new is None or new[1] >= old[1]:
        return None
    severity: Severity = "high" if new[1] == 0 else "medium"
    return severity, f"lowered audit coverage of {new[0]} from {old[2]} to {new[2]}"


def _level(text: str | None) -> tuple[str, int, str] | None:
    """``"security : full"`` -> (area, rank, level name)."""
    if not text or ":" not in text:
        return None
    area, _, level = text.rpartition(":")
    value = _LEVELS.get(level.strip().lower())
    return None if value is None else (area.strip(), value, level.strip())


def _retention_cut(change: Change) -> tuple[Severity, str] | None:
    old, new = _days(change.old), _days(change.new)
    if old is None or new is None or new >= old:
        return None
    return "medium", f"cut audit retention from {change.old} to {change.new}"


def _days(text: str | None) -> int | None:
    match = _DURATION.search(text or "")
    if match is None:
        return None
    return int(match.group(1)) * _DAYS[match.group(2).lower()]

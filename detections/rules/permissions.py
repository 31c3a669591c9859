"""bb.permission_escalation: admin grants, admin-group additions, token upgrades."""

from __future__ import annotations

import re
from collections.abc import Sequence

from collector.model import AuditEvent, Severity
from detections.rules.base import (
    NO_FINDINGS,
    BaseRule,
    DetectionState,
    Finding,
    RuleMeta,
    actor_key,
)
from detections.settings import EngineSettings

_RANK = {
    "SYS_ADMIN": 60,
    "ADMIN": 50,
    "PROJECT_ADMIN": 40,
    "REPO_ADMIN": 30,
    "PROJECT_CREATE": 25,
    "LICENSED_USER": 5,
}
_ADMIN_RANK = _RANK["REPO_ADMIN"]
_GLOBAL_RANK = _RANK["ADMIN"]
_WORDS = re.compile(r"[A-Z_]+")


def rank(permission: str) -> int:
    """Power of a Bitbucket permission name (unknown names rank 0)."""
    name = permission.strip().upper()
    if name in _RANK:
        return _RANK[name]
    if name.endswith("_WRITE"):
        return 20
    return 10 if name.endswith("_READ") else 0


def top_rank(text: str | None) -> tuple[int, str]:
    """The strongest permission in a list like ``"PROJECT_READ, REPO_READ"``."""
    names = _WORDS.findall((text or "").upper())
    return max(((rank(n), n) for n in names), default=(0, ""))


class PermissionEscalation(BaseRule):
    """Grants that hand out admin power, raised further when self-granted."""

    META = RuleMeta(
        id="bb.permission_escalation",
        name="Permission escalation",
        description=(
            "Global, project or repository admin granted; a user added to an "
            "admin group; a token's permissions raised. Self-grants rank higher."
        ),
        severity="medium",
        risk_score=47,
        techniques=("T1098",),
        consumes=frozenset(
            {
                "permission.granted",
                "permission.changed",
                "group.member_added",
                "token.modified",
            }
        ),
        limitations=(
            "Grants to groups are judged by permission only, not group size. "
            "Admin groups are matched by name from config. Requested-but-not-"
            "granted permissions are ignored (the granted twin is judged)."
        ),
        runbook=(
            "Confirm the grant with a change ticket; if none, revoke it and "
            "review what the grantee did since."
        ),
    )

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.admin_groups = frozenset(g.lower() for g in settings.admin_groups)

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Route by action to the check that reads its fields."""
        if event.action == "group.member_added":
            found = self._group(event)
        elif event.action == "token.modified":
            found = self._token(event)
        else:
            found = self._grant(event)
        return (found,) if found is not None else NO_FINDINGS

    def _grant(self, event: AuditEvent) -> Finding | None:
        attrs = event.attributes
        permission = attrs.get("Permission") or attrs.get("details.permission") or ""
        old = 0
        for change in event.changes:
            old = max(old, top_rank(change.old)[0])
            permission = permission or top_rank(change.new)[1]
        power = rank(permission)
        if power < _ADMIN_RANK or power <= old:
            return None

        grantee = attrs.get("details.user") or _first(event, "USER")
        grantee = grantee or attrs.get("details.group") or _first(event, "GROUP")
        severity: Severity = "high" if power >= _GLOBAL_RANK else "medium"
        return self._finding(event, grantee, permission.upper(), severity)

    def _group(self, event: AuditEvent) -> Finding | None:
        groups = event.target_names("GROUP") or [
            event.attributes.get("Parent group") or event.attributes.get("target", "")
        ]
        admin = next((g for g in groups if g.lower() in self.admin_groups), None)
        if admin is None:
            return None

        members = event.attributes.get("details.entities", "")
        grantee = _first(event, "USER") or members.split(",")[0] or None
        return self._finding(event, grantee, f"member of {admin}", "high")

    def _token(self, event: AuditEvent) -> Finding | None:
        for change in event.changes:
            old, _ = top_rank(change.old)
            new, name = top_rank(change.new)
            if new >= _ADMIN_RANK and new > old:
                owner = _first(event, "USER")
                severity: Severity = "high" if new >= _GLOBAL_RANK else "medium"
                return self._finding(event, owner, f"token {name}", severity)
        return None

    def _finding(
        self,
        event: AuditEvent,
        grantee: str | None,
        what: str,
        severity: Severity,
    ) -> Finding:
        actor = actor_key(event) or (event.actor.name or "unknown").lower()
        own = grantee is not None and grantee.lower() == actor
        if own:
            severity = "critical" if severity == "high" else "high"
        who = "themselves" if own else (grantee or "someone")
        return Finding(
            key=f"{actor}|{grantee or ''}|{what}",
            anchor=event.id,
            summary=f"{actor} granted {who} {what}",
            evidence=(event.id,),
            severity=severity,
            risk_score=_RISK[severity],
            actor=actor,
            details={"grantee": grantee, "granted": what, "self_grant": own},
        )


_RISK: dict[str, int] = {"medium": 47, "high": 73, "critical": 99}


def _first(event: AuditEvent, target_type: str) -> str | None:
    names = event.target_names(target_type)
    return names[0] if names else None

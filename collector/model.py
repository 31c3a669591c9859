"""The records that flow through the pipeline: audit events and alerts.

An *audit event* is what Bitbucket recorded, normalized into one shape whatever the
source. An *alert* is what a detection raises about one or more audit events.
Both are frozen; the only mutable part is ``AuditEvent.context``, which belongs
to the enrichers (and the pipeline's bookkeeping) and is filled before detection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Platform = Literal["dc", "cloud"]
Outcome = Literal["success", "failure", "unknown"]
ActorKind = Literal["human", "system", "anonymous", "bot", "unknown"]
Severity = Literal["info", "low", "medium", "high", "critical"]

SEVERITY_ORDER: dict[str, int] = {
    "info": 0,
    "low": 1,
    "medium": 2,
    "high": 3,
    "critical": 4,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it, as the source named them (enrichers add the directory view)."""

    name: str | None = None
    id: str | None = None
    email: str | None = None
    kind: ActorKind = "unknown"
    raw_type: str | None = None
    auth_method: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What it was done to: a user, group, project, repository, token, ..."""

    type: str
    name: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One changed value, ``old`` -> ``new`` (either may be absent)."""

    key: str
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One normalized audit event.

    ``id`` is stable: a content hash for Data Center records (they carry no id),
    the record's own id for Cloud. ``action`` is from the vocabulary in
    ``collector.actions``; an action bbaudit does not know keeps its raw name
    under ``bitbucket.<slug>`` so nothing is dropped. ``raw`` is the record as
    read, untouched.
    """

    id: str
    time: datetime
    platform: Platform
    instance: str
    source_kind: str
    action: str
    category: str
    outcome: Outcome = "unknown"
    raw_action: str | None = None
    action_key: str | None = None
    raw_category: str | None = None
    actor: Actor = field(default_factory=Actor)
    targets: tuple[Target, ...] = ()
    source_ip: str | None = None
    user_agent: str | None = None
    changes: tuple[Change, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    # Bytes of ``raw`` as the source read it, 0 when unknown. Only the batch
    # size estimate reads it, which then need not serialize ``raw`` again.
    raw_size: int = field(default=0, compare=False, repr=False)

    def target_names(self, target_type: str) -> list[str]:
        """Names of the targets of one type (``REPOSITORY``, ``USER``, ...)."""
        return [t.name for t in self.targets if t.type == target_type and t.name]


@dataclass(frozen=True, slots=True)
class Alert:
    """What a detection raised.

    ``id`` is deterministic over (rule, key, window) so that a replay after a
    crash yields the same id and the SIEM can drop the repeat. ``evidence`` holds
    the ids of the audit events that made the rule fire.
    """

    id: str
    rule_id: str
    rule_name: str
    severity: Severity
    risk_score: int
    time: datetime
    summary: str
    key: str
    evidence: tuple[str, ...]
    techniques: tuple[str, ...] = ()
    actor: str | None = None
    source_ip: str | None = None
    geo: Mapping[str, Any] | None = None
    platform: Platform | None = None
    instance: str | None = None
    rule_author: str | None = None
    references: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


Record = AuditEvent | Alert

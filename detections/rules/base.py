"""What every rule is made of: metadata, findings, the state it may use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from collector.model import AuditEvent, Severity
from collector.state import StateStore
from detections.settings import EngineSettings, RuleSettings
from detections.state import (
    Baselines,
    FirstSeen,
    KeyedState,
    SlidingWindows,
    Suppressions,
)

ANY_ACTION = "*"
NO_FINDINGS: tuple[Finding, ...] = ()
_NOT_PEOPLE = frozenset({"system", "anonymous"})


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """A rule's catalog entry; ``consumes`` is a set of actions or ``{"*"}``."""

    id: str
    name: str
    description: str
    severity: Severity
    risk_score: int
    techniques: tuple[str, ...]
    consumes: frozenset[str]
    limitations: str
    runbook: str
    author: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """One match of a rule, before suppression turns it into an alert.

    ``anchor`` pins the alert id (first evidence event of the window, or the
    event itself); ``severity``/``risk_score`` override the rule's defaults.
    """

    key: str
    anchor: str
    summary: str
    evidence: tuple[str, ...]
    severity: Severity | None = None
    risk_score: int | None = None
    actor: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class DetectionState:
    """Every namespace of detection state, loaded and flushed together."""

    def __init__(self, settings: EngineSettings) -> None:
        ttl = settings.baseline_ttl
        cap = settings.max_state_keys
        spans = [
            span
            for rule in settings.rules.values()
            for span in (rule.window, rule.secondary_window, rule.suppression)
            if span
        ]
        # Stored rows must outlive the longest window, or a restart forgets it.
        keep = max([86400.0, settings.suppression_window, *spans]) * 2
        self.windows = SlidingWindows("detect.windows", ttl_s=keep, max_keys=cap)
        self.baselines = Baselines("detect.baselines", ttl_s=ttl, max_keys=cap)
        self.first_seen = FirstSeen("detect.first_seen", ttl_s=ttl * 4, max_keys=cap)
        self.locations = KeyedState("detect.locations", ttl_s=keep, max_keys=cap)
        self.suppressions = Suppressions(
            "detect.suppressions", ttl_s=keep, max_keys=cap
        )
        self.risk = KeyedState("detect.risk", ttl_s=keep, max_keys=cap)

    def parts(self) -> tuple[KeyedState, ...]:
        """The namespaces, in a fixed order."""
        return (
            self.windows,
            self.baselines,
            self.first_seen,
            self.locations,
            self.suppressions,
            self.risk,
        )

    def load(self, store: StateStore) -> None:
        """Read every namespace from the store."""
        for part in self.parts():
            part.load(store)

    def flush(self, store: StateStore) -> int:
        """Write what changed; returns keys written."""
        return sum(part.flush(store) for part in self.parts())


class Rule(Protocol):
    """A detection: metadata plus an evaluation over one audit event."""

    META: ClassVar[RuleMeta]

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Findings this event raises (usually none)."""
        ...


class BaseRule:
    """Shared plumbing: the rule's overrides and engine settings."""

    META: ClassVar[RuleMeta]

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Findings this event raises; ``user`` is the acting user's key."""
        raise NotImplementedError

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.overrides: RuleSettings = settings.rule(self.META.id)
        self.lateness = settings.allowed_lateness
        self.max_evidence = settings.max_evidence

    def held_back(self, state: DetectionState, key: str, ts: float) -> bool:
        """True when an alert for ``key`` would be suppressed anyway (saves work)."""
        return state.suppressions.active(self.META.id, key, ts)


def actor_key(event: AuditEvent) -> str | None:
    """The acting user's key, or None for system/anonymous authors.

    The directory's username when the identity enricher matched one, so that a
    person's DC and Cloud activity share state; else the Cloud actor's email or
    id (Cloud names are display names, and two people can share one); else the
    lowercased name.
    """
    actor = event.actor
    if actor.kind in _NOT_PEOPLE:
        return None
    identity = event.context.get("identity")
    if isinstance(identity, dict) and identity.get("matched_by"):
        username = identity.get("username")
        if isinstance(username, str) and username:
            return username.lower()
    if event.platform == "cloud":
        name = actor.email or actor.id or actor.name
    else:
        name = actor.name or actor.id
    return name.lower() if name else None


def tried_username(event: AuditEvent) -> str | None:
    """The user name a login tried, lowercased: on DC a failed login is written
    by "Anonymous" and names the account in ``target`` or a USER target."""
    tried = event.attributes.get("target") or next(
        iter(event.target_names("USER")), None
    )
    return tried.lower() if tried else None


def context_map(event: AuditEvent, key: str) -> Mapping[str, Any]:
    """``event.context[key]`` when it is a mapping, else an empty one."""
    value = event.context.get(key)
    if value is None:  # the common miss, without the slow ABC check below
        return _EMPTY
    if value.__class__ is dict or isinstance(value, Mapping):
        return value  # type: ignore[no-any-return]  # checked just above
    return _EMPTY


_EMPTY: Mapping[str, Any] = {}

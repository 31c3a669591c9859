"""The built-in rules, one small module per rule (or per family of rules)."""

from __future__ import annotations

from detections.rules.accounts import BruteForce, InactiveIdentity
from detections.rules.base import BaseRule, Finding, Rule, RuleMeta
from detections.rules.baselines import NewAsn, NewCountry, NewSourceIp
from detections.rules.mass_clone import MassClone
from detections.rules.network import ImpossibleTravel, IpOutsideAllowlist
from detections.rules.permissions import PermissionEscalation
from detections.rules.protections import ProtectionDisabled
from detections.rules.risk import RiskAggregation

EVENT_RULES: tuple[type[BaseRule], ...] = (
    MassClone,
    NewSourceIp,
    NewCountry,
    NewAsn,
    IpOutsideAllowlist,
    ImpossibleTravel,
    PermissionEscalation,
    ProtectionDisabled,
    BruteForce,
    InactiveIdentity,
)
"""Rules evaluated on audit events, in evaluation order."""

__all__ = [
    "EVENT_RULES",
    "BaseRule",
    "Finding",
    "RiskAggregation",
    "Rule",
    "RuleMeta",
]

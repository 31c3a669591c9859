"""Settings of the detection engine (config key ``detections``, kind ``engine``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from collector.settings_types import Duration, PluginSettings, StrictModel

Severity = Literal["info", "low", "medium", "high", "critical"]
LearningScope = Literal["user", "global"]

DEFAULT_ADMIN_GROUPS = ("administrators", "bitbucket-admins", "sys-admins", "admins")


class RuleSettings(StrictModel):
    """Overrides for one rule; unset fields keep the rule's defaults.

    ``threshold``/``window`` are the rule's main count and span; rules with a
    second count (mass clone of private repositories, brute force per IP) read
    ``secondary_threshold``/``secondary_window``.
    """

    enabled: bool = True
    severity: Severity | None = None
    risk_score: int | None = Field(default=None, ge=0, le=100)
    threshold: int | None = Field(default=None, ge=1)
    window: Duration | None = None
    secondary_threshold: int | None = Field(default=None, ge=1)
    secondary_window: Duration | None = None
    suppression: Duration | None = None


class EngineSettings(PluginSettings):
    """The ``detections:`` block of the config file."""

    kind: Literal["engine"] = "engine"
    enabled: bool = True
    rules: dict[str, RuleSettings] = Field(default_factory=dict)
    suppression_window: Duration = 3600.0
    learning_period: Duration = 7 * 86400.0
    learning_scope: LearningScope = "user"
    baseline_ttl: Duration = 14 * 86400.0
    allowed_lateness: Duration = 300.0
    sigma_builtin: bool = True
    sigma_dirs: list[Path] = Field(default_factory=list)
    allowlist_zones: list[str] = Field(default_factory=list)
    vpn_zones: list[str] = Field(default_factory=lambda: ["vpn"])
    admin_groups: list[str] = Field(default_factory=lambda: list(DEFAULT_ADMIN_GROUPS))
    security_apps: list[str] = Field(default_factory=list)
    travel_speed_kmh: float = Field(default=900.0, gt=0)
    travel_min_distance_km: float = Field(default=500.0, ge=0)
    flush_interval: Duration = 30.0
    max_state_keys: int = Field(default=100_000, ge=100)
    max_evidence: int = Field(default=50, ge=1)

    def rule(self, rule_id: str) -> RuleSettings:
        """The overrides for ``rule_id`` (defaults when none are configured)."""
        return self.rules.get(rule_id) or _DEFAULT_RULE


_DEFAULT_RULE = RuleSettings()

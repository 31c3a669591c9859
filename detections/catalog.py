"""The rule catalog: every rule's metadata and the ``bbaudit rules list`` table."""

from __future__ import annotations

from detections.engine import build_rules, sigma_dirs
from detections.rules import RiskAggregation, RuleMeta
from detections.settings import EngineSettings
from detections.sigma import load_sigma

_COLUMNS = ("id", "severity", "risk", "techniques", "name", "consumes")


def rule_catalog(settings: EngineSettings | None = None) -> list[RuleMeta]:
    """Metadata of every enabled rule: built-in, risk aggregation, then Sigma."""
    settings = settings or EngineSettings()
    metas = [rule.META for rule in build_rules(settings)]
    if settings.rule(RiskAggregation.META.id).enabled:
        metas.append(RiskAggregation.META)
    sigma, _ = load_sigma(sigma_dirs(settings))
    metas += [s.meta for s in sigma if settings.rule(s.meta.id).enabled]
    return metas


def format_rules_table(settings: EngineSettings | None = None) -> str:
    """A plain-text table: id, severity, risk, techniques, name, consumed actions."""
    rows = [_COLUMNS]
    for meta in rule_catalog(settings):
        rows.append(
            (
                meta.id,
                meta.severity,
                str(meta.risk_score),
                ",".join(meta.techniques) or "-",
                meta.name,
                ",".join(sorted(meta.consumes)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"

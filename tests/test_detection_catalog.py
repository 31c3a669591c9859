"""The rule catalog: ids, severities, techniques, limitations, example coverage."""

from __future__ import annotations

import re

from detections import format_rules_table, rule_catalog
from detections.examples import load_examples
from detections.settings import EngineSettings

_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
_BUILTIN_IDS = {
    "bb.mass_clone",
    "bb.new_source_ip",
    "bb.new_country",
    "bb.new_asn",
    "bb.ip_outside_allowlist",
    "bb.impossible_travel",
    "bb.permission_escalation",
    "bb.protection_disabled",
    "bb.brute_force",
    "bb.inactive_identity",
    "bb.risk_aggregation",
}


def test_catalog_holds_the_stable_ids() -> None:
    """Every built-in id is present and the 14 SigmaHQ rules load."""
    ids = [meta.id for meta in rule_catalog()]

    assert set(ids) >= _BUILTIN_IDS
    assert len(ids) == len(set(ids)) == len(_BUILTIN_IDS) + 14


def test_every_rule_has_complete_metadata() -> None:
    """Severity, risk, techniques, consumes, limitations and runbook are filled."""
    for meta in rule_catalog():
        assert meta.severity in {"info", "low", "medium", "high", "critical"}
        assert 0 <= meta.risk_score <= 100
        assert all(_TECHNIQUE.match(t) for t in meta.techniques), meta.id
        assert meta.consumes and meta.limitations and meta.runbook, meta.id
        assert meta.name and meta.description, meta.id


def test_sigma_rules_keep_their_attribution() -> None:
    """Sigma rules keep title, author, id and references (DRL 1.1)."""
    sigma = [m for m in rule_catalog() if not m.id.startswith("bb.")]

    assert all(m.author and m.references and m.name for m in sigma)


def test_every_rule_has_positive_and_negative_examples() -> None:
    """Each rule in the catalog has at least one firing and one silent example."""
    cases = load_examples()
    for meta in rule_catalog():
        outcomes = {case.fires for case in cases if case.rule == meta.id}
        assert outcomes == {True, False}, meta.id


def test_rules_table_lists_every_rule() -> None:
    """The ``rules list`` table has a header and one line per rule."""
    table = format_rules_table(EngineSettings())
    lines = table.splitlines()

    assert lines[0].split()[:4] == ["id", "severity", "risk", "techniques"]
    assert len(lines) == 1 + len(rule_catalog())
    assert any("bb.mass_clone" in line and "repo.cloned" in line for line in lines)


def test_disabled_rule_leaves_the_catalog() -> None:
    """A rule disabled in config is not listed."""
    settings = EngineSettings.model_validate(
        {"rules": {"bb.new_asn": {"enabled": False}}}
    )

    assert "bb.new_asn" not in {m.id for m in rule_catalog(settings)}


def test_engine_config_keys_are_pinned() -> None:
    """The ``detections:`` config keys change only on purpose."""
    keys = set(EngineSettings.model_fields)

    assert keys == {
        "kind",
        "name",
        "enabled",
        "rules",
        "suppression_window",
        "learning_period",
        "learning_scope",
        "baseline_ttl",
        "allowed_lateness",
        "sigma_builtin",
        "sigma_dirs",
        "allowlist_zones",
        "vpn_zones",
        "admin_groups",
        "security_apps",
        "travel_speed_kmh",
        "travel_min_distance_km",
        "flush_interval",
        "max_state_keys",
        "max_evidence",
    }

"""Sigma rules: loading with clear errors and native evaluation of the modifiers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.model import Actor, AuditEvent
from collector.normalize.dc import normalize_dc
from detections.sigma import (
    BUILTIN_DIR,
    SigmaLoadError,
    field_view,
    load_sigma,
    load_sigma_file,
)
from tests.conftest import SHARED_DATA

SHARED_SIGMA = SHARED_DATA / "sigma"

_RULE = """
title: Test rule
id: 0b5b7a5e-0000-4000-8000-000000000001
author: tester
references: [https://example.invalid/rule]
logsource: {{product: bitbucket, service: audit}}
detection:
{detection}
level: high
tags: [attack.t1098]
"""

_RECORD: dict[str, Any] = {
    "affectedObjects": [
        {"id": "1", "name": "PROJ", "type": "PROJECT"},
        {"id": "2", "name": "mallory", "type": "USER"},
    ],
    "auditType": {
        "action": "Global permission granted",
        "category": "Permissions",
        "level": "BASE",
    },
    "author": {"id": "7", "name": "mallory", "type": "NORMAL"},
    "extraAttributes": [
        {"name": "Permission", "nameI18nKey": "x.permission", "value": "SYS_ADMIN"}
    ],
    "source": "10.1.2.3",
    "timestamp": {"epochSecond": 1767607200, "nano": 0},
}


def _event(record: dict[str, Any] | None = None) -> AuditEvent:
    return normalize_dc(record or _RECORD, instance="t", source_kind="file")


def _matches(tmp_path: Path, detection: str, event: AuditEvent | None = None) -> bool:
    path = tmp_path / "rule.yml"
    path.write_text(_RULE.format(detection=detection), encoding="utf-8")
    (rule,) = load_sigma_file(path)
    return rule.matches(field_view(event or _event()))


@pytest.mark.parametrize(
    ("detection", "expected"),
    [
        ("  sel:\n    auditType.action: global PERMISSION granted\n", True),
        ("  sel:\n    type.action: Global permission granted\n", True),
        ("  sel:\n    auditType.action: 'Global*granted'\n", True),
        ("  sel:\n    auditType.action: 'Global permission grante?'\n", True),
        ("  sel:\n    auditType.action|contains: PERMISSION\n", True),
        ("  sel:\n    auditType.action|startswith: global\n", True),
        ("  sel:\n    auditType.action|endswith: removed\n", False),
        ("  sel:\n    auditType.action|contains|all: [global, granted]\n", True),
        ("  sel:\n    auditType.action|contains|all: [global, revoked]\n", False),
        ("  sel:\n    auditType.action|re: '^Global .* granted$'\n", True),
        ("  sel:\n    auditType.action|re: '^global'\n", False),
        ("  sel:\n    auditType.action|re|i: '^global'\n", True),
        ("  sel:\n    auditType.action|re|m: '^Global'\n", True),
        ("  sel:\n    source|cidr: 10.0.0.0/8\n", True),
        ("  sel:\n    source|cidr: 192.168.0.0/16\n", False),
        ("  sel:\n    auditType.level|exists: true\n", True),
        ("  sel:\n    method|exists: true\n", False),
        ("  sel:\n    affectedObjects.name: mallory\n", True),
        ("  sel:\n    attributes.Permission: sys_admin\n", True),
        ("  sel:\n    bbaudit.action: permission.granted\n", True),
        ("  sel:\n    timestamp.nano: 0\n", True),
        ("  sel:\n    timestamp.epochSecond|gt: 1000\n", True),
        ("  sel:\n    timestamp.epochSecond|lt: 1000\n", False),
        ("  sel:\n    method: null\n", True),
    ],
)
def test_field_modifiers(tmp_path: Path, detection: str, expected: bool) -> None:
    """Each supported modifier matches (or not) as Sigma defines it."""
    rule = detection + "  condition: sel\n"

    assert _matches(tmp_path, rule) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("sel_a and not sel_b", True),
        ("sel_a and sel_b", False),
        ("1 of sel_*", True),
        ("all of sel_*", False),
        ("all of them and not sel_b", False),
        ("(sel_a or sel_b) and not filter", True),
        ("keywords", True),
    ],
)
def test_conditions(tmp_path: Path, condition: str, expected: bool) -> None:
    """Condition expressions combine selections with and/or/not/1 of/all of."""
    detection = (
        "  sel_a:\n    auditType.category: Permissions\n"
        "  sel_b:\n    auditType.category: Projects\n"
        "  filter:\n    author.name: admin\n"
        "  keywords:\n    - SYS_ADMIN\n"
        f"  condition: {condition}\n"
    )

    assert _matches(tmp_path, detection) is expected


def test_rest_events_match_rules_written_for_audit_files(tmp_path: Path) -> None:
    """A rule on ``auditType.*`` matches the REST shape's ``type.*``."""
    record = {k: v for k, v in _RECORD.items() if k != "auditType"}
    record["type"] = {"action": "Global permission granted", "category": "Permissions"}
    record["timestamp"] = "2026-01-05T10:00:00.000Z"
    detection = "  sel:\n    auditType.category: permissions\n  condition: sel\n"

    assert _matches(tmp_path, detection, _event(record))


def test_cloud_events_use_dc_names_where_they_mean_the_same(tmp_path: Path) -> None:
    """A Cloud failed login matches the DC login-failure rule's fields."""
    event = AuditEvent(
        id="c1",
        time=datetime(2026, 1, 5, tzinfo=UTC),
        platform="cloud",
        instance="org",
        source_kind="cloud",
        action="auth.login_failed",
        category="authentication",
        actor=Actor(name="bob", kind="human"),
    )
    detection = (
        "  sel:\n    auditType.category: Authentication\n"
        "    auditType.action: User login failed\n  condition: sel\n"
    )

    assert _matches(tmp_path, detection, event)


def test_backtracking_regex_runs_in_linear_time(tmp_path: Path) -> None:
    """A catastrophic pattern over a long value answers at once (RE2, no ReDoS)."""
    record = {**_RECORD, "source": "a" * 100_000 + "!"}
    started = time.perf_counter()

    detection = "  sel:\n    source|re: '^(a+)+$'\n  condition: sel\n"
    matched = _matches(tmp_path, detection, _event(record))

    assert not matched
    # Python's re needs longer than the age of the universe here; RE2 takes
    # milliseconds. The bound only has to tell the two apart.
    assert time.perf_counter() - started < 5


def test_regex_needing_backreferences_is_refused_with_its_path(
    tmp_path: Path,
) -> None:
    """A pattern RE2 cannot run is a load error naming the file, not a fallback.

    pySigma refuses it first when google-re2 is installed (it validates with
    RE2 then); ``detections.sigma`` would refuse it the same way otherwise.
    """
    path = tmp_path / "backref.yml"
    detection = "  sel:\n    source|re: '(a)\\1'\n  condition: sel\n"
    path.write_text(_RULE.format(detection=detection), encoding="utf-8")

    with pytest.raises(SigmaLoadError) as refused:
        load_sigma_file(path)

    assert "backref.yml" in str(refused.value)
    assert "SigmaRegularExpressionError" in str(refused.value)


def test_shared_sigma_rules_all_load() -> None:
    """The 14 SigmaHQ Bitbucket rules load from the shared data and the bundle."""
    for directory in (SHARED_SIGMA, BUILTIN_DIR):
        rules, errors = load_sigma([directory])

        assert errors == []
        assert len(rules) == 14
        assert all(rule.actions for rule in rules)


def test_a_broken_file_is_named_and_the_others_load(tmp_path: Path) -> None:
    """A bad rule file yields an error naming it; the good files still load."""
    (tmp_path / "good.yml").write_text(
        _RULE.format(detection="  sel:\n    a: b\n  condition: sel\n"), "utf-8"
    )
    (tmp_path / "bad.yml").write_text("title: broken\ndetection: [", "utf-8")
    (tmp_path / "other.yml").write_text(
        _RULE.format(
            detection="  sel:\n    a|base64offset|contains: b\n  condition: sel\n"
        ).replace("bitbucket", "windows"),
        "utf-8",
    )

    rules, errors = load_sigma([tmp_path])

    assert [r.meta.name for r in rules] == ["Test rule"]
    assert sorted(e.path.name for e in errors) == ["bad.yml", "other.yml"]
    assert all(isinstance(e, SigmaLoadError) and e.path.name in str(e) for e in errors)


def test_sigma_metadata_maps_level_tags_and_attribution(tmp_path: Path) -> None:
    """Level becomes severity, attack tags techniques; author and references stay."""
    path = tmp_path / "rule.yml"
    path.write_text(_RULE.format(detection="  s:\n    a: b\n  condition: s\n"), "utf-8")

    (rule,) = load_sigma_file(path)

    assert (rule.meta.severity, rule.meta.risk_score) == ("high", 73)
    assert rule.meta.techniques == ("T1098",)
    assert rule.meta.author == "tester"
    assert rule.meta.references == ("https://example.invalid/rule",)


def test_the_same_rule_in_two_directories_loads_once() -> None:
    """The bundled rules plus the shared copy yield each rule id once."""
    rules, errors = load_sigma([BUILTIN_DIR, SHARED_SIGMA])

    assert errors == []
    assert len(rules) == len({r.meta.id for r in rules}) == 14

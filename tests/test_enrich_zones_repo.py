"""Network zones and repository tags from the config."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.config import parse_config
from collector.errors import ConfigError
from collector.metrics import Metrics
from collector.model import AuditEvent, Target
from enrichers.repo_tags import RepoTagsEnricher, RepoTagsSettings
from enrichers.zones import ZonesEnricher, ZonesSettings


def event(
    ip: str | None = None,
    targets: tuple[Target, ...] = (),
    attributes: dict[str, str] | None = None,
) -> AuditEvent:
    """An audit event with a source IP, targets and attributes."""
    return AuditEvent(
        id="e1",
        time=datetime(2026, 5, 1, tzinfo=UTC),
        platform="dc",
        instance="bb",
        source_kind="test",
        action="repo.cloned",
        category="repository",
        source_ip=ip,
        targets=targets,
        attributes=attributes or {},
    )


ZONES = {
    "office": ["10.10.0.0/16", "2001:db8:10::/48"],
    "vpn": ["10.20.0.0/16"],
    "corp": ["10.0.0.0/8"],
}


@pytest.mark.parametrize(
    ("ip", "zones"),
    [
        ("10.10.1.1", ["office", "corp"]),
        ("10.20.9.9", ["vpn", "corp"]),
        ("2001:db8:10::5", ["office"]),
        ("::ffff:10.20.0.1", ["vpn", "corp"]),
        ("8.8.8.8", []),
        ("garbage", []),
    ],
)
async def test_zones_of_source_ip(metrics: Metrics, ip: str, zones: list[str]) -> None:
    """An address gets the names of every zone holding it, in config order."""
    enricher = ZonesEnricher(ZonesSettings(zones=ZONES), metrics)
    ev = event(ip)

    await enricher.enrich([ev, event(None)])

    assert ev.context["zones"] == zones


def test_bad_cidr_is_a_config_error() -> None:
    """A malformed network is rejected with its config path."""
    with pytest.raises(ConfigError, match=r"enrichers\[0\]\.zones"):
        parse_config({"enrichers": [{"kind": "zones", "zones": {"x": ["10.0.0.1/8"]}}]})


RULES = RepoTagsSettings.model_validate(
    {
        "kind": "repo_tags",
        "rules": [
            {"project": "CLIN*", "tags": ["phi"], "sensitivity": "restricted"},
            {"project": "*", "repository": "*-secrets", "tags": ["crown-jewel"]},
            {
                "project": "PLAT",
                "repository": "core",
                "tags": ["crown-jewel"],
                "sensitivity": "confidential",
            },
        ],
        "default_sensitivity": "internal",
    }
)


async def test_repository_target_with_project_prefix(metrics: Metrics) -> None:
    """A ``PROJECT/repo`` target gets the tags of every matching rule."""
    enricher = RepoTagsEnricher(RULES, metrics)
    ev = event(targets=(Target("REPOSITORY", "clinical/trial-secrets"),))

    await enricher.enrich([ev])

    assert ev.context["repo"] == {
        "project": "clinical",
        "repository": "trial-secrets",
        "tags": ["phi", "crown-jewel"],
        "sensitivity": "restricted",
    }


async def test_rest_shape_repository_beside_project(metrics: Metrics) -> None:
    """A bare repository slug takes its project from the PROJECT target."""
    enricher = RepoTagsEnricher(RULES, metrics)
    ev = event(targets=(Target("PROJECT", "PLAT"), Target("REPOSITORY", "core")))

    await enricher.enrich([ev])

    assert ev.context["repo"]["tags"] == ["crown-jewel"]
    assert ev.context["repo"]["sensitivity"] == "confidential"


async def test_project_only_and_attributes(metrics: Metrics) -> None:
    """Project targets and details attributes also name the repository."""
    enricher = RepoTagsEnricher(RULES, metrics)
    project = event(targets=(Target("PROJECT", "CLINOPS"),))
    details = event(
        attributes={"details.project": "PLAT", "details.repository": "core"}
    )
    nothing = event()

    await enricher.enrich([project, details, nothing])

    assert project.context["repo"]["repository"] is None
    assert project.context["repo"]["tags"] == ["phi"]
    assert details.context["repo"]["sensitivity"] == "confidential"
    assert "repo" not in nothing.context


async def test_untagged_repository_gets_default(metrics: Metrics) -> None:
    """A repository no rule matches keeps its name and the default sensitivity."""
    enricher = RepoTagsEnricher(RULES, metrics)
    ev = event(targets=(Target("REPOSITORY", "WEB/site"),))

    await enricher.enrich([ev])

    assert ev.context["repo"] == {
        "project": "WEB",
        "repository": "site",
        "tags": [],
        "sensitivity": "internal",
    }


def test_unknown_sensitivity_is_a_config_error() -> None:
    """A sensitivity outside the order list is rejected with its path."""
    bad = {"kind": "repo_tags", "rules": [{"tags": [], "sensitivity": "secret"}]}

    with pytest.raises(ConfigError, match=r"enrichers\[0\]"):
        parse_config({"enrichers": [bad]})

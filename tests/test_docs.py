"""The documentation stays true: the configuration reference is generated from
the settings models, and the registered plugin kinds are pinned."""

from __future__ import annotations

from collector.config_reference import render_reference
from collector.plugins import DETECTORS, ENRICHERS, SINKS, SOURCES
from tests.conftest import PROJECT_ROOT


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md equals what the settings models generate."""
    committed = (PROJECT_ROOT / "docs" / "configuration.md").read_text("utf-8")

    assert committed == render_reference(), (
        "regenerate with: python -m collector.config_reference > docs/configuration.md"
    )


def test_registered_kinds_are_pinned() -> None:
    """Adding or renaming a plugin kind is a deliberate, documented change."""
    assert SOURCES.kinds() == ["cloud_org", "dc_access_log", "dc_file", "dc_rest"]
    assert ENRICHERS.kinds() == [
        "geoip",
        "identity_file",
        "identity_scim",
        "repo_tags",
        "zones",
    ]
    assert DETECTORS.kinds() == ["engine"]
    assert SINKS.kinds() == ["file", "kafka", "splunk_hec", "stdout", "syslog"]


def test_readme_quick_start_has_the_two_commands() -> None:
    """The README's Quick start names exactly `make run` and `make test`."""
    readme = (PROJECT_ROOT / "README.md").read_text("utf-8")
    start = readme.index("## Quick start")
    quick_start = readme[start : readme.index("\n## ", start + 1)]

    assert "make run" in quick_start
    assert "make test" in quick_start

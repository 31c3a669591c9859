"""The Cloud org audit normalizer against the public sample events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from collector.actions import slug
from collector.normalize.cloud import classify_cloud, normalize_cloud
from tests.conftest import SAMPLES


def sample_lines(name: str) -> list[dict[str, Any]]:
    """The JSON objects of one ndjson sample file."""
    text = (SAMPLES / name).read_text(encoding="utf-8")
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def org_events() -> dict[str, dict[str, Any]]:
    """The org audit sample events by action."""
    items = sample_lines("elastic_atlassian_cloud_org_audit_events.ndjson")
    return {item["attributes"]["action"]: item for item in items}


def normalize(item: dict[str, Any]) -> Any:
    """``normalize_cloud`` with the test instance."""
    return normalize_cloud(item, instance="acme", source_kind="cloud_org")


def test_login_event_fields() -> None:
    """A user_login becomes auth.login with actor, IP, time and location."""
    event = normalize(org_events()["user_login"])

    assert event.id == "a1000001-0000-4000-8000-000000000001"
    assert event.platform == "cloud"
    assert event.action == "auth.login" and event.category == "authentication"
    assert event.time == datetime(2026, 5, 19, 10, 0, tzinfo=UTC)
    assert event.actor.name == "Alice Johnson"
    assert event.actor.email == "alice.johnson@example.com"
    assert event.actor.kind == "human"
    assert event.source_ip == "198.51.100.10"
    assert event.attributes["processedAt"] == "2026-05-19T10:00:01.000Z"
    assert event.attributes["location.countryName"] == "Example Country"
    assert event.raw_action == "user_login"


def test_failed_login_has_failure_outcome() -> None:
    """user_login_failed is a failed authentication."""
    event = normalize(org_events()["user_login_failed"])

    assert (event.action, event.outcome) == ("auth.login_failed", "failure")


def test_token_creation_carries_token_attributes() -> None:
    """api_token_created keeps the token id and label and the auth type."""
    event = normalize(org_events()["api_token_created"])

    assert event.action == "token.created"
    assert event.actor.auth_method == "session"
    assert event.attributes["actor.tokenId"] == "token-00000001"
    assert event.attributes["actor.tokenLabel"] == "Example API Token"


def test_settings_update_keeps_container_attributes() -> None:
    """org_settings_update is a policy change; its container lands in attributes."""
    event = normalize(org_events()["org_settings_update"])

    assert event.action == "settings.policy_changed"
    assert event.attributes["container.0.type"] == "orgs"
    assert event.attributes["container.0.settingName"] == "AuthenticationPolicy"


def test_policy_update_pattern_and_context_targets() -> None:
    """*_policy_update maps by pattern; context items become targets."""
    events = org_events()

    policy = normalize(events["data_classification_policy_update"])
    invite = normalize(events["user_invitation_sent"])

    assert policy.action == "settings.policy_changed"
    assert invite.targets[0].type == "invited-user"
    assert invite.targets[0].name == "carol.davis@example.com"


def test_product_actor_and_missing_ip() -> None:
    """A product acting on its own is a system actor without an email; no IP."""
    item = org_events()["confluence_audit_record_removed_content_restriction"]

    event = normalize(item)

    assert event.actor.kind == "system" and event.actor.email is None
    assert event.source_ip is None
    assert event.action.startswith("bitbucket.")
    assert event.category == "other"


def test_impersonation_sample_from_panther() -> None:
    """user_logged_in_as_user becomes auth.impersonated with the user as target."""
    item = orjson.loads(
        (SAMPLES / "panther_atlassian_user_logged_in_as_user.json").read_bytes()
    )

    event = normalize(item)

    assert event.action == "auth.impersonated"
    assert event.targets[0].type == "users"
    assert event.targets[0].name == "example.user@example.io"
    assert event.attributes["container.0.siteName"] == "example"
    assert "processedAt" not in event.attributes


def test_stream_page_samples_all_normalize() -> None:
    """Every event of the events-stream sample pages normalizes."""
    for name in ("page1", "page2"):
        page = orjson.loads(
            (
                SAMPLES / f"elastic_atlassian_cloud_events_stream_mock_{name}.json"
            ).read_bytes()
        )
        events = [normalize(item) for item in page["data"]]
        assert all(e.platform == "cloud" and e.id for e in events)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("user_logout", "auth.logout"),
        ("user_granted_role", "permission.granted"),
        ("added_org_admin", "permission.granted"),
        ("group_granted_admin_access", "permission.granted"),
        ("user_revoked_role", "permission.revoked"),
        ("group_member_added", "group.member_added"),
        ("group_created", "group.created"),
        ("group_deleted", "group.deleted"),
        ("user_created", "user.created"),
        ("api_token_revoked", "token.deleted"),
        ("twosv_disabled_for_user", "settings.2sv_disabled"),
        ("bitbucket_workspace_2sv_requirement_disabled", "settings.2sv_disabled"),
        ("bitbucket_workspace_two_step_verification_disabled", "settings.2sv_disabled"),
        (
            "bitbucket_workspace_ip_allowlisting_disabled",
            "settings.ip_allowlist_disabled",
        ),
        ("authentication_policy_update", "settings.policy_changed"),
    ],
)
def test_action_table(action: str, expected: str) -> None:
    """Known and pattern-matched org actions map onto the vocabulary."""
    assert classify_cloud(action).action == expected


def test_unknown_action_is_kept() -> None:
    """An unknown key becomes bitbucket.<slug> in category other."""
    info = classify_cloud("Some New-Thing")

    assert info.action == f"bitbucket.{slug('some new-thing')}"
    assert info.category == "other"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda item: item.pop("id"),
        lambda item: item["attributes"].pop("time"),
        lambda item: item["attributes"].__setitem__("time", "yesterday"),
        lambda item: item["attributes"].__setitem__("action", ""),
        lambda item: item["attributes"]["location"].__setitem__("ip", 12.5j),
    ],
)
def test_broken_items_raise_value_error(mutate: Any) -> None:
    """An item without id, time or action, or with a wrong type, raises ValueError."""
    item = orjson.loads(orjson.dumps(org_events()["user_login"]))
    mutate(item)

    with pytest.raises(ValueError):
        normalize(item)


def test_empty_strings_are_absent_and_app_auth_is_bot() -> None:
    """Empty strings count as missing; a connect-token actor is a bot."""
    item = orjson.loads(orjson.dumps(org_events()["user_login"]))
    item["attributes"]["location"]["ip"] = ""
    item["attributes"]["actor"]["email"] = ""
    item["attributes"]["actor"]["auth"] = {"authType": "connect-token"}

    event = normalize(item)

    assert event.source_ip is None and event.actor.email is None
    assert event.actor.kind == "bot"

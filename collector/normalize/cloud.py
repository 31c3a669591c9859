"""Atlassian organization audit events (``/events-stream`` ``data[]`` items).

Bitbucket Cloud has no audit API of its own; its Guard-level audit events
arrive through the organization events API with the other products' events.
No public sample of a Bitbucket-originated org event exists (shared reference
§10.7), so the Bitbucket keys below are matched by pattern as well as by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from collector.actions import ActionInfo, slug
from collector.model import Actor, ActorKind, AuditEvent, Target
from collector.normalize.dc import text_field

_MAX_ATTRIBUTE_CHARS = 8192


def _a(action: str, category: str, outcome: str = "success") -> ActionInfo:
    return ActionInfo(action, category, outcome)


# Org audit action key -> normalized action. Keys from the Panther data model,
# Elastic's fixtures and the Atlassian admin docs (shared reference §7).
CLOUD_ACTIONS: dict[str, ActionInfo] = {
    "user_login": _a("auth.login", "authentication"),
    "user_login_failed": _a("auth.login_failed", "authentication", "failure"),
    "user_logout": _a("auth.logout", "authentication"),
    "user_logged_in_as_user": _a("auth.impersonated", "authentication"),
    "user_granted_role": _a("permission.granted", "permission"),
    "added_org_admin": _a("permission.granted", "permission"),
    "group_granted_admin_access": _a("permission.granted", "permission"),
    "user_revoked_role": _a("permission.revoked", "permission"),
    "removed_org_admin": _a("permission.revoked", "permission"),
    "group_revoked_admin_access": _a("permission.revoked", "permission"),
    "group_member_added": _a("group.member_added", "group"),
    "group_member_removed": _a("group.member_removed", "group"),
    "group_created": _a("group.created", "group"),
    "group_deleted": _a("group.deleted", "group"),
    "user_created": _a("user.created", "user"),
    "user_deleted": _a("user.deleted", "user"),
    "user_deactivated": _a("user.deactivated", "user"),
    "user_reactivated": _a("user.reactivated", "user"),
    "user_invitation_sent": _a("user.invited", "user"),
    "api_token_created": _a("token.created", "token"),
    "api_token_revoked": _a("token.deleted", "token"),
    "api_token_revoked_by_admin": _a("token.deleted", "token"),
    "api_key_created": _a("token.created", "token"),
    "api_key_revoked": _a("token.deleted", "token"),
    "twosv_disabled_for_user": _a("settings.2sv_disabled", "settings"),
    "twosv_enabled_for_user": _a("settings.2sv_enabled", "settings"),
    "org_settings_update": _a("settings.policy_changed", "settings"),
    "ip_allowlist_disabled": _a("settings.ip_allowlist_disabled", "settings"),
    "ip_allowlist_enabled": _a("settings.ip_allowlist_enabled", "settings"),
    "ip_allowlist_updated": _a("settings.ip_allowlist_changed", "settings"),
    "audit_log_exported": _a("export.audit_log", "export"),
    # Bitbucket workspace events of the Guard list (§7.2, §7.3). The key
    # spelling is a guess from the display names (unverified, §10.7);
    # _PATTERNS below catch close variants.
    "bitbucket_user_added_to_workspace": _a("group.member_added", "group"),
    "bitbucket_user_removed_from_workspace": _a("group.member_removed", "group"),
    "bitbucket_user_added_to_group": _a("group.member_added", "group"),
    "bitbucket_user_removed_from_group": _a("group.member_removed", "group"),
    "bitbucket_group_created": _a("group.created", "group"),
    "bitbucket_group_deleted": _a("group.deleted", "group"),
    "bitbucket_workspace_2sv_requirement_disabled": _a(
        "settings.2sv_disabled", "settings"
    ),
    "bitbucket_workspace_2sv_requirement_enabled": _a(
        "settings.2sv_enabled", "settings"
    ),
    "bitbucket_workspace_ip_allowlisting_disabled": _a(
        "settings.ip_allowlist_disabled", "settings"
    ),
    "bitbucket_workspace_ip_allowlisting_enabled": _a(
        "settings.ip_allowlist_enabled", "settings"
    ),
    "bitbucket_workspace_ip_allowlisted_addresses_changed": _a(
        "settings.ip_allowlist_changed", "settings"
    ),
    "bitbucket_workspace_privacy_changed": _a(
        "settings.visibility_changed", "settings"
    ),
    "bitbucket_allowed_private_content_in_workspace": _a(
        "settings.visibility_changed", "settings"
    ),
    "bitbucket_repository_transferred_from_workspace": _a(
        "repo.transferred", "repository"
    ),
    "bitbucket_group_repository_access_permissions_changed": _a(
        "permission.changed", "permission"
    ),
    "bitbucket_removed_group_access_to_repository": _a(
        "permission.revoked", "permission"
    ),
}

# For keys not in the table: ordered (pattern, info); first match wins.
_PATTERNS: tuple[tuple[re.Pattern[str], ActionInfo], ...] = (
    (
        re.compile(r"(2sv|two_?step|2fa|mfa).*disabled|disabled.*(2sv|2fa|mfa)"),
        _a("settings.2sv_disabled", "settings"),
    ),
    (
        re.compile(r"ip_allow_?list\w*_disabled|disabled_ip_allow_?list"),
        _a("settings.ip_allowlist_disabled", "settings"),
    ),
    (re.compile(r"_policy_update$"), _a("settings.policy_changed", "settings")),
    (re.compile(r"^api_token_revok"), _a("token.deleted", "token")),
)

# Auth types under which an actor is a program, not a person typing. The
# documented set is open (an undocumented value appears in Elastic's fixture).
_BOT_AUTH_TYPES = frozenset({"container-token", "connect-token", "auth-token-for-2lo"})


def classify_cloud(action: str) -> ActionInfo:
    """Map an org audit action key onto the vocabulary; unknown keys are kept."""
    key = action.strip().lower()
    found = CLOUD_ACTIONS.get(key)
    if found is not None:
        return found
    for pattern, info in _PATTERNS:
        if pattern.search(key):
            return info
    return ActionInfo(f"bitbucket.{slug(key)}", "other", "unknown")


def normalize_cloud(
    item: Mapping[str, Any], *, instance: str, source_kind: str
) -> AuditEvent:
    """Turn one org audit event into an ``AuditEvent`` (``platform="cloud"``).

    Raises ``ValueError`` when the item has no id, time or action, or a field
    has the wrong type.
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"expected a JSON object, got {type(item).__name__}")
    event_id = text_field(item.get("id"))
    attrs = item.get("attributes")
    if not event_id or not isinstance(attrs, Mapping):
        raise ValueError("missing id or attributes")
    action = text_field(attrs.get("action"))
    if not action:
        raise ValueError("missing attributes.action")

    info = classify_cloud(action)
    actor_block = attrs.get("actor")
    location = attrs.get("location")
    location = location if isinstance(location, Mapping) else {}

    return AuditEvent(
        id=event_id,
        time=parse_time(attrs.get("time"), "attributes.time"),
        platform="cloud",
        instance=instance,
        source_kind=source_kind,
        action=info.action,
        category=info.category,
        # The table holds only Outcome values; ActionInfo types it as str.
        outcome=info.outcome,  # type: ignore[arg-type]
        raw_action=action,
        action_key=action,
        raw_category=None,
        actor=_actor(actor_block),
        targets=_targets(attrs.get("context")),
        source_ip=text_field(location.get("ip")),
        changes=(),
        attributes=_attributes(item, attrs, actor_block, location),
        raw=item,
    )


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 time as UTC; raises ``ValueError`` naming ``field``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"missing {field}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{field} {value[:40]!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # Year 1 with a positive offset (or 9999 with a negative one) does
        # not fit in a datetime once moved to UTC.
        return parsed.astimezone(UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"{field} {value[:40]!r} is out of range") from exc


def _actor(block: Any) -> Actor:
    if not isinstance(block, Mapping):
        return Actor(kind="unknown")
    auth = block.get("auth")
    auth_type = text_field(auth.get("authType")) if isinstance(auth, Mapping) else None
    return Actor(
        name=text_field(block.get("name")),
        id=text_field(block.get("id")),
        email=_email(block.get("email")),
        kind=_actor_kind(block, auth_type),
        raw_type=auth_type,
        auth_method=auth_type,
    )


def _email(value: Any) -> str | None:
    # Atlassian products acting on their own carry "Atlassian app" here.
    text = text_field(value)
    return text if text and "@" in text else None


def _actor_kind(block: Mapping[str, Any], auth_type: str | None) -> ActorKind:
    if isinstance(block.get("app"), Mapping) and block.get("app"):
        return "bot"
    if auth_type and auth_type.lower() in _BOT_AUTH_TYPES:
        return "bot"
    if block.get("email") == "Atlassian app":
        return "system"
    if block.get("id") is None and block.get("name") is None:
        return "unknown"
    return "human"


def _targets(value: Any) -> tuple[Target, ...]:
    if not isinstance(value, list):
        return ()
    targets = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        attrs = item.get("attributes")
        attrs = attrs if isinstance(attrs, Mapping) else {}
        name = (
            _loose_text(attrs.get("name"))
            or _loose_text(attrs.get("displayName"))
            or _loose_text(attrs.get("email"))
            or _loose_text(attrs.get("siteName"))
        )
        targets.append(
            Target(
                type=_loose_text(item.get("type")) or "unknown",
                name=name,
                id=_loose_text(item.get("id")),
            )
        )
    return tuple(targets)


def _loose_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _attributes(
    item: Mapping[str, Any],
    attrs: Mapping[str, Any],
    actor: Any,
    location: Mapping[str, Any],
) -> dict[str, str]:
    """Flat string attributes: processing time, message, place, token, containers."""
    out: dict[str, str] = {}
    _put(out, "processedAt", attrs.get("processedAt"))
    message = item.get("message")
    if isinstance(message, Mapping):
        _put(out, "message", message.get("content"))
    for key in ("countryName", "regionName", "city", "geo"):
        _put(out, f"location.{key}", location.get(key))
    if isinstance(actor, Mapping):
        auth = actor.get("auth")
        if isinstance(auth, Mapping):
            _put(out, "actor.tokenId", auth.get("tokenId"))
            _put(out, "actor.tokenLabel", auth.get("tokenLabel"))
        behalf = actor.get("onBehalfOf")
        if isinstance(behalf, Mapping):
            _put(out, "actor.onBehalfOf.id", behalf.get("id"))
            _put(out, "actor.onBehalfOf.name", behalf.get("name"))
            _put(out, "actor.onBehalfOf.email", behalf.get("email"))
    _put_containers(out, attrs.get("container"))
    return out


def _put_containers(out: dict[str, str], value: Any) -> None:
    if not isinstance(value, list):
        return
    for index, container in enumerate(value[:8]):
        if not isinstance(container, Mapping):
            continue
        prefix = f"container.{index}"
        _put(out, f"{prefix}.type", container.get("type"))
        _put(out, f"{prefix}.id", container.get("id"))
        attrs = container.get("attributes")
        if isinstance(attrs, Mapping):
            for key, value_ in list(attrs.items())[:16]:
                _put(out, f"{prefix}.{key}", value_)


def _put(out: dict[str, str], key: str, value: Any) -> None:
    if isinstance(value, str) and value:
        out[key] = value[:_MAX_ATTRIBUTE_CHARS]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[key] = str(value)

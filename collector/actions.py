"""The normalized action vocabulary and the map from Bitbucket's names onto it.

Detections consume normalized actions (``permission.granted``), never Bitbucket's
display strings, which may be localised. Data Center records are matched first by
their stable ``actionI18nKey`` and then by the English display name; Cloud
normalizers map their own keys onto the same words (``collector.normalize.cloud``).

An action that is not in the table is kept, not dropped: it becomes
``bitbucket.<slug of the display name>`` in category ``other``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """A normalized action, its category and whether it reports a failure."""

    action: str
    category: str
    outcome: str = "success"


def _a(action: str, category: str, outcome: str = "success") -> ActionInfo:
    return ActionInfo(action, category, outcome)


# Categories, one word each: authentication, permission, group, user, token,
# key, audit, secret_scanning, repository, project, export, settings, app, access.

# actionI18nKey -> info. Keys without a dot prefix are the tail after
# "bitbucket.service.user.audit.action." (the most common prefix).
_BY_KEY: dict[str, ActionInfo] = {
    # Authentication
    "authenticationsuccess": _a("auth.login", "authentication"),
    "authenticationfailure": _a("auth.login_failed", "authentication", "failure"),
    "bitbucket.web.audit.action.logoutsuccess": _a("auth.logout", "authentication"),
    # Permissions
    "globalpermissiongrantrequested": _a("permission.grant_requested", "permission"),
    "globalpermissiongranted": _a("permission.granted", "permission"),
    "globalpermissionrevocationrequested": _a(
        "permission.revoke_requested", "permission"
    ),
    "globalpermissionrevoked": _a("permission.revoked", "permission"),
    "projectpermissiongrantrequested": _a("permission.grant_requested", "permission"),
    "projectpermissiongranted": _a("permission.granted", "permission"),
    "projectpermissionrevocationrequested": _a(
        "permission.revoke_requested", "permission"
    ),
    "projectpermissionrevoked": _a("permission.revoked", "permission"),
    "repositorypermissiongrantrequested": _a(
        "permission.grant_requested", "permission"
    ),
    "repositorypermissiongranted": _a("permission.granted", "permission"),
    "repositorypermissionrevocationrequested": _a(
        "permission.revoke_requested", "permission"
    ),
    "repositorypermissionrevoked": _a("permission.revoked", "permission"),
    # Groups and users
    "groupmembershipscreated.user": _a("group.member_added", "group"),
    "groupmembershipscreated": _a("group.member_added", "group"),
    "groupmembershipdeleted": _a("group.member_removed", "group"),
    "groupcreated": _a("group.created", "group"),
    "groupdeleted": _a("group.deleted", "group"),
    "usercreated": _a("user.created", "user"),
    "userdeleted": _a("user.deleted", "user"),
    "userrenamed": _a("user.renamed", "user"),
    "usercredentialupdated": _a("user.password_changed", "user"),
    "directorycreated": _a("directory.created", "user"),
    # Tokens and keys
    "bitbucket.access.tokens.audit.action.accesstokencreated.personal": _a(
        "token.created", "token"
    ),
    "bitbucket.access.tokens.audit.action.accesstokenmodified.personal": _a(
        "token.modified", "token"
    ),
    "bitbucket.access.tokens.audit.action.accesstokendeleted.personal": _a(
        "token.deleted", "token"
    ),
    "bitbucket.access.tokens.audit.action.accesstokencreated.repository": _a(
        "token.created", "token"
    ),
    "bitbucket.access.tokens.audit.action.accesstokenmodified.repository": _a(
        "token.modified", "token"
    ),
    "bitbucket.access.tokens.audit.action.accesstokendeleted.repository": _a(
        "token.deleted", "token"
    ),
    "bitbucket.access.tokens.audit.action.accesstokencreated.project": _a(
        "token.created", "token"
    ),
    "bitbucket.ssh.audit.action.sshkeycreated": _a("ssh_key.added", "key"),
    "bitbucket.ssh.audit.action.sshkeydeleted": _a("ssh_key.deleted", "key"),
    "bitbucket.ssh.audit.action.sshaccesskeygranted.repository": _a(
        "access_key.added", "key"
    ),
    "bitbucket.ssh.audit.action.sshaccesskeyrevoked.repository": _a(
        "access_key.removed", "key"
    ),
    "bitbucket.ssh.audit.action.sshaccesskeygranted.project": _a(
        "access_key.added", "key"
    ),
    "bitbucket.plugins.gpg.audit.action.gpgevent.created": _a("gpg_key.added", "key"),
    "bitbucket.plugins.gpg.audit.action.gpgevent.deleted": _a("gpg_key.deleted", "key"),
    # Audit log itself
    "atlassian.audit.event.action.audit.search": _a("audit.searched", "audit"),
    "atlassian.audit.event.action.audit.config.updated": _a(
        "audit.config_changed", "audit"
    ),
    # Repositories and projects
    "bitbucket.service.repository.audit.action.repositorycreated": _a(
        "repo.created", "repository"
    ),
    "bitbucket.service.repository.audit.action.repositorydeleted": _a(
        "repo.deleted", "repository"
    ),
    "bitbucket.service.repository.audit.action.repositoryaccessed": _a(
        "repo.accessed", "repository"
    ),
    "bitbucket.service.repository.audit.action.repositorymodificationrequested": _a(
        "repo.change_requested", "repository"
    ),
    "bitbucket.service.repository.audit.action.repositorymodified": _a(
        "repo.modified", "repository"
    ),
    "bitbucket.service.project.audit.action.projectcreated": _a(
        "project.created", "project"
    ),
    "bitbucket.service.project.audit.action.projectdeleted": _a(
        "project.deleted", "project"
    ),
    "bitbucket.service.project.audit.action.projectmodified": _a(
        "project.modified", "project"
    ),
    # Settings and apps
    "bitbucket.service.plugin.audit.action.pluginenabled": _a("app.enabled", "app"),
    "bitbucket.service.plugin.audit.action.plugindisabled": _a("app.disabled", "app"),
    "bitbucket.service.plugin.audit.action.pluginuninstalled": _a(
        "app.uninstalled", "app"
    ),
    "bitbucket.service.plugin.audit.action.plugininstalled": _a("app.installed", "app"),
    "bitbucket.service.license.audit.action.licensechanged": _a(
        "settings.license_changed", "settings"
    ),
    "bitbucket.service.applicationconfiguration.audit.action.baseurlchanged": _a(
        "settings.base_url_changed", "settings"
    ),
    "bitbucket.search.audit.action.elasticsearchconfigurationchange": _a(
        "settings.search_changed", "settings"
    ),
    "bitbucket.scm.git.lfs.audit.action.gitlfsfeatureenabled": _a(
        "settings.lfs_enabled", "settings"
    ),
}

# English display name -> info, for records whose key is missing or unknown.
# Several come only from the SigmaHQ rules, whose keys are not public (see
# shared reference §7): they are matched by name until a live instance shows
# the key.
_BY_NAME: dict[str, ActionInfo] = {
    "user logged in": _a("auth.login", "authentication"),
    "user login failed": _a("auth.login_failed", "authentication", "failure"),
    "user login failed(ssh)": _a("auth.login_failed", "authentication", "failure"),
    "user logged out": _a("auth.logout", "authentication"),
    "unauthorized access to a resource": _a("access.unauthorized", "access", "failure"),
    "global permission requested": _a("permission.grant_requested", "permission"),
    "global permission granted": _a("permission.granted", "permission"),
    "global permission remove request": _a("permission.revoke_requested", "permission"),
    "global permission removed": _a("permission.revoked", "permission"),
    "global permission changed": _a("permission.changed", "permission"),
    "project permission granted": _a("permission.granted", "permission"),
    "project permission removed": _a("permission.revoked", "permission"),
    "repository permission requested": _a("permission.grant_requested", "permission"),
    "repository permission granted": _a("permission.granted", "permission"),
    "repository permission remove request": _a(
        "permission.revoke_requested", "permission"
    ),
    "repository permission removed": _a("permission.revoked", "permission"),
    "user added to user group": _a("group.member_added", "group"),
    "user deleted from user group": _a("group.member_removed", "group"),
    "user group created": _a("group.created", "group"),
    "user group deleted": _a("group.deleted", "group"),
    "user created": _a("user.created", "user"),
    "user deleted": _a("user.deleted", "user"),
    "username changed": _a("user.renamed", "user"),
    "user password changed": _a("user.password_changed", "user"),
    "personal access token created": _a("token.created", "token"),
    "personal access token changed": _a("token.modified", "token"),
    "personal access token deleted": _a("token.deleted", "token"),
    "repository access token created": _a("token.created", "token"),
    "repository access token changed": _a("token.modified", "token"),
    "repository access token deleted": _a("token.deleted", "token"),
    "user added ssh access key to profile": _a("ssh_key.added", "key"),
    "user deleted ssh access key from profile": _a("ssh_key.deleted", "key"),
    "ssh access key added to repository": _a("access_key.added", "key"),
    "ssh access key deleted from repository": _a("access_key.removed", "key"),
    "audit log search performed": _a("audit.searched", "audit"),
    "audit log configuration updated": _a("audit.config_changed", "audit"),
    "global secret scanning rule deleted": _a(
        "secret_scanning.rule_deleted", "secret_scanning"
    ),
    "project secret scanning rule deleted": _a(
        "secret_scanning.rule_deleted", "secret_scanning"
    ),
    "repository secret scanning rule deleted": _a(
        "secret_scanning.rule_deleted", "secret_scanning"
    ),
    "secret scanning exempt repository added": _a(
        "secret_scanning.exemption_added", "secret_scanning"
    ),
    "project secret scanning allowlist rule added": _a(
        "secret_scanning.allowlist_added", "secret_scanning"
    ),
    "repository secret scanning allowlist rule added": _a(
        "secret_scanning.allowlist_added", "secret_scanning"
    ),
    "ssh settings changed": _a("settings.ssh_changed", "settings"),
    "default rate limiting settings changed": _a(
        "settings.rate_limit_changed", "settings"
    ),
    "http access to scm hosting changed": _a("settings.scm_http_changed", "settings"),
    "repository hook settings changed for repository": _a(
        "repo.hook_settings_changed", "repository"
    ),
    "branch permission deleted": _a("repo.branch_permission_removed", "repository"),
    "branch permissions deleted": _a("repo.branch_permission_removed", "repository"),
    "merge check disabled": _a("repo.merge_check_disabled", "repository"),
    "repository created": _a("repo.created", "repository"),
    "repository deleted": _a("repo.deleted", "repository"),
    "repository accessed by user": _a("repo.accessed", "repository"),
    "repository cloned": _a("repo.cloned", "repository"),
    "repository pulled": _a("repo.fetched", "repository"),
    "changes pushed to repository": _a("repo.pushed", "repository"),
    # From the access log only (with include_refs): a ref advertisement.
    "refs advertised": _a("repo.refs_advertised", "repository"),
    # From the access log only: `git archive --remote` or the REST download.
    "repository archive downloaded": _a("repo.archived", "repository"),
    "repository forked": _a("repo.forked", "repository"),
    "repository change requested": _a("repo.change_requested", "repository"),
    "project created": _a("project.created", "project"),
    "project deleted": _a("project.deleted", "project"),
    "project settings changed": _a("project.modified", "project"),
    "full data export triggered": _a("export.full_started", "export"),
    "unauthorized full data export triggered": _a(
        "export.full_unauthorized", "export", "failure"
    ),
    "full data export cancelled": _a("export.full_cancelled", "export"),
    "user permissions export started": _a("export.permissions_started", "export"),
    "user permissions exported": _a("export.permissions_completed", "export"),
    "user permissions export failed": _a(
        "export.permissions_failed", "export", "failure"
    ),
    "user details export started": _a("export.users_started", "export"),
    "user details exported": _a("export.users_completed", "export"),
    "user details export failed": _a("export.users_failed", "export", "failure"),
    "plugin enabled": _a("app.enabled", "app"),
    "plugin disabled": _a("app.disabled", "app"),
    "plugin uninstalled": _a("app.uninstalled", "app"),
    "plugin installed": _a("app.installed", "app"),
}

_DEFAULT_KEY_PREFIX = "bitbucket.service.user.audit.action."
_NON_WORD = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """Lowercase words joined by underscores (``SSH settings`` -> ``ssh_settings``)."""
    return _NON_WORD.sub("_", text.lower()).strip("_") or "unknown"


def classify_dc(key: str | None, name: str | None) -> ActionInfo:
    """Map a DC action (i18n key, English display name) onto the vocabulary."""
    if key:
        found = _BY_KEY.get(key)
        if found is None and key.startswith(_DEFAULT_KEY_PREFIX):
            found = _BY_KEY.get(key.removeprefix(_DEFAULT_KEY_PREFIX))
        if found is not None:
            return found

    if name:
        found = _BY_NAME.get(name.strip().lower())
        if found is not None:
            return found

    raw = name or (key.rsplit(".", 1)[-1] if key else "unknown")
    return ActionInfo(f"bitbucket.{slug(raw)}", "other", "unknown")


def known_actions() -> list[str]:
    """Every normalized action in the vocabulary (DC and Cloud), sorted."""
    # Imported here: the Cloud table itself builds on this module.
    from collector.normalize.cloud import CLOUD_ACTIONS

    names = {info.action for info in _BY_KEY.values()}
    names |= {info.action for info in _BY_NAME.values()}
    names |= {info.action for info in CLOUD_ACTIONS.values()}
    return sorted(names)

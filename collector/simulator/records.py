"""Record shapes the simulator emits: DC audit events, git operations, Cloud events.

One ``DcEvent`` renders to both Data Center shapes (REST entity and audit-file
line) with the same content, so ``collector.ids.dc_event_id`` gives both the
same id. Action names follow the Elastic fixtures where one exists and the
SigmaHQ rules otherwise (``/work/shared/data/sigma``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SYSTEM_URL = "http://bitbucket.internal:7990"

_CAT = "bitbucket.service.audit.category."
_USER = "bitbucket.service.user.audit.action."
_REPO = "bitbucket.service.repository.audit.action."
_TOKENS = "bitbucket.access.tokens.audit.action."


@dataclass(frozen=True, slots=True)
class AuditType:
    """The ``type`` / ``auditType`` block of one DC action."""

    action: str
    key: str
    category: str
    category_key: str
    area: str
    level: str

    def rest(self) -> dict[str, str]:
        """The REST ``type`` block (no area, no level)."""
        return {
            "categoryI18nKey": self.category_key,
            "category": self.category,
            "actionI18nKey": self.key,
            "action": self.action,
        }

    def file(self) -> dict[str, str]:
        """The audit-file ``auditType`` block."""
        return {
            "action": self.action,
            "actionI18nKey": self.key,
            "area": self.area,
            "category": self.category,
            "categoryI18nKey": self.category_key,
            "level": self.level,
        }


def _t(
    action: str, key: str, category: str, cat_key: str, area: str, level: str
) -> AuditType:
    return AuditType(action, key, category, cat_key, area, level)


_AUTH = ("Authentication", _CAT + "authentication")
_PERM = ("Permissions", _CAT + "permissions")
_UAG = ("Users and groups", _CAT + "usersandgroups")
_REPOS = ("Repositories", _CAT + "repositories")
_PROJ = ("Projects", _CAT + "projects")
_AUDIT = ("Auditing", "atlassian.audit.event.category.audit")
_GLOBAL = ("Global administration", _CAT + "globaladministration")
# Category key invented: the Sigma rules give only the display name.
_PIPE = ("Data pipeline", _CAT + "datapipeline")

LOGIN = _t(
    "User logged in", _USER + "authenticationsuccess", *_AUTH, "SECURITY", "FULL"
)
LOGIN_FAILED = _t(
    "User login failed", _USER + "authenticationfailure", *_AUTH, "SECURITY", "ADVANCED"
)
LOGOUT = _t(
    "User logged out",
    "bitbucket.web.audit.action.logoutsuccess",
    *_AUTH,
    "SECURITY",
    "ADVANCED",
)
REPO_ACCESSED = _t(
    "Repository accessed by user",
    _REPO + "repositoryaccessed",
    *_REPOS,
    "END_USER_ACTIVITY",
    "BASE",
)
REPO_CREATED = _t(
    "Repository created",
    _REPO + "repositorycreated",
    *_REPOS,
    "LOCAL_CONFIG_AND_ADMINISTRATION",
    "BASE",
)
GLOBAL_PERM_REQUESTED = _t(
    "Global permission requested",
    _USER + "globalpermissiongrantrequested",
    *_PERM,
    "PERMISSIONS",
    "BASE",
)
GLOBAL_PERM_GRANTED = _t(
    "Global permission granted",
    _USER + "globalpermissiongranted",
    *_PERM,
    "PERMISSIONS",
    "BASE",
)
PROJECT_PERM_REQUESTED = _t(
    "Project permission requested",
    _USER + "projectpermissiongrantrequested",
    *_PERM,
    "PERMISSIONS",
    "BASE",
)
PROJECT_PERM_GRANTED = _t(
    "Project permission granted",
    _USER + "projectpermissiongranted",
    *_PERM,
    "PERMISSIONS",
    "BASE",
)
REPO_PERM_REQUESTED = _t(
    "Repository permission requested",
    _USER + "repositorypermissiongrantrequested",
    *_PERM,
    "PERMISSIONS",
    "BASE",
)
REPO_PERM_GRANTED = _t(
    "Repository permission granted",
    _USER + "repositorypermissiongranted",
    *_PERM,
    "PERMISSIONS",
    "BASE",
)
GROUP_MEMBER_ADDED = _t(
    "User added to user group",
    _USER + "groupmembershipscreated.user",
    *_UAG,
    "USER_MANAGEMENT",
    "BASE",
)
GROUP_MEMBER_REMOVED = _t(
    "User deleted from user group",
    _USER + "groupmembershipdeleted",
    *_UAG,
    "USER_MANAGEMENT",
    "BASE",
)
USER_CREATED = _t(
    "User created", _USER + "usercreated", *_UAG, "USER_MANAGEMENT", "BASE"
)
PAT_CREATED = _t(
    "Personal access token created",
    _TOKENS + "accesstokencreated.personal",
    *_UAG,
    "USER_MANAGEMENT",
    "BASE",
)
PAT_CHANGED = _t(
    "Personal access token changed",
    _TOKENS + "accesstokenmodified.personal",
    *_UAG,
    "USER_MANAGEMENT",
    "BASE",
)
PAT_DELETED = _t(
    "Personal access token deleted",
    _TOKENS + "accesstokendeleted.personal",
    *_UAG,
    "USER_MANAGEMENT",
    "BASE",
)
SSH_KEY_ADDED = _t(
    "User added SSH access key to profile",
    "bitbucket.ssh.audit.action.sshkeycreated",
    *_UAG,
    "USER_MANAGEMENT",
    "BASE",
)
AUDIT_SEARCH = _t(
    "Audit Log search performed",
    "atlassian.audit.event.action.audit.search",
    *_AUDIT,
    "AUDIT_LOG",
    "BASE",
)
# Sigma spells it "Audit log ..."; the Elastic fixture "Audit Log ...". Sigma's
# spelling is used so that a case-sensitive matcher still fires.
AUDIT_CONFIG = _t(
    "Audit log configuration updated",
    "atlassian.audit.event.action.audit.config.updated",
    *_AUDIT,
    "AUDIT_LOG",
    "BASE",
)
SEARCH_SETTINGS = _t(
    "Elasticsearch settings changed",
    "bitbucket.search.audit.action.elasticsearchconfigurationchange",
    *_GLOBAL,
    "GLOBAL_CONFIG_AND_ADMINISTRATION",
    "BASE",
)
# The keys below are not public (the actions are known from SigmaHQ only); they
# are plausible placeholders, and normalizers match these actions by name.
GLOBAL_SECRET_RULE_DELETED = _t(
    "Global secret scanning rule deleted",
    "bitbucket.secretscanning.audit.action.globalruledeleted",
    *_GLOBAL,
    "GLOBAL_CONFIG_AND_ADMINISTRATION",
    "BASE",
)
SECRET_EXEMPT_REPO = _t(
    "Secret scanning exempt repository added",
    "bitbucket.secretscanning.audit.action.exemptrepositoryadded",
    *_REPOS,
    "LOCAL_CONFIG_AND_ADMINISTRATION",
    "BASE",
)
PROJECT_SECRET_ALLOWLIST = _t(
    "Project secret scanning allowlist rule added",
    "bitbucket.secretscanning.audit.action.projectallowlistruleadded",
    *_PROJ,
    "LOCAL_CONFIG_AND_ADMINISTRATION",
    "BASE",
)
SSH_SETTINGS = _t(
    "SSH settings changed",
    "bitbucket.ssh.audit.action.sshsettingschanged",
    *_GLOBAL,
    "GLOBAL_CONFIG_AND_ADMINISTRATION",
    "ADVANCED",
)
FULL_EXPORT = _t(
    "Full data export triggered",
    "bitbucket.datapipeline.audit.action.fullexporttriggered",
    *_PIPE,
    "GLOBAL_CONFIG_AND_ADMINISTRATION",
    "ADVANCED",
)
PERMISSIONS_EXPORT = _t(
    "User permissions export started",
    "bitbucket.permissions.audit.action.permissionsexportstarted",
    *_UAG,
    "USER_MANAGEMENT",
    "ADVANCED",
)


@dataclass(frozen=True, slots=True)
class Author:
    """Who did it, as DC names them."""

    id: str
    name: str
    type: str = "NORMAL"

    def rest(self) -> dict[str, str]:
        """The REST author block (adds ``uri`` and ``avatarUri`` for users)."""
        block = {"name": self.name, "type": self.type, "id": self.id}
        if self.type == "NORMAL":
            block["uri"] = f"{SYSTEM_URL}/users/{self.name}"
        if self.type != "system":
            block["avatarUri"] = ""
        return block

    def file(self) -> dict[str, str]:
        """The audit-file author block."""
        return {"id": self.id, "name": self.name, "type": self.type}


SYSTEM = Author("-1", "System", "system")
ANONYMOUS = Author("-2", "Anonymous", "user")


def obj(kind: str, name: str, obj_id: str | None = None) -> dict[str, str]:
    """One affected object."""
    item = {"name": name, "type": kind}
    if obj_id is not None:
        item["id"] = obj_id
    return item


def attr(name: str, key: str, value: str) -> dict[str, str]:
    """One extra attribute."""
    return {"nameI18nKey": key, "name": name, "value": value}


def change(key: str, i18n: str, old: str | None, new: str | None) -> dict[str, str]:
    """One changed value; an absent side is left out, as Atlassian does."""
    item = {"key": key, "i18nKey": i18n}
    if old is not None:
        item["from"] = old
    if new is not None:
        item["to"] = new
    return item


def target(value: str) -> dict[str, str]:
    """The legacy ``target`` attribute."""
    return attr("target", "bitbucket.audit.attribute.legacy.target", value)


def details(value: str) -> dict[str, str]:
    """The legacy ``details`` attribute (JSON inside a string)."""
    return attr("details", "bitbucket.audit.attribute.legacy.details", value)


@dataclass(frozen=True, slots=True)
class DcEvent:
    """One DC audit event; ``seq`` is the internal id the page cursor embeds.

    ``visible_ms`` is when the auditing API first returns it (later than
    ``epoch_ms`` for late arrivals). ``source`` ``None`` means the field is
    absent (System events); ``""`` is sent as an empty string.
    """

    epoch_ms: int
    kind: AuditType
    author: Author
    source: str | None
    node: str
    affected: tuple[dict[str, str], ...] = ()
    changed: tuple[dict[str, str], ...] = ()
    extra: tuple[dict[str, str], ...] = ()
    method: str = "Browser"
    visible_ms: int = 0
    seq: int = 0
    story: str | None = None

    def iso(self) -> str:
        """The REST timestamp: ISO 8601, milliseconds, ``Z``."""
        return iso_ms(self.epoch_ms)

    def rest_entity(self) -> dict[str, Any]:
        """The ``entities[]`` element of ``/rest/auditing/1.0/events``."""
        entity: dict[str, Any] = {
            "timestamp": self.iso(),
            "author": self.author.rest(),
            "type": self.kind.rest(),
            "affectedObjects": [_rest_object(o) for o in self.affected],
            "changedValues": [dict(c) for c in self.changed],
        }
        if self.source is not None:
            entity["source"] = self.source
        entity["system"] = SYSTEM_URL
        entity["node"] = self.node
        entity["method"] = self.method
        entity["extraAttributes"] = [dict(a) for a in self.extra]
        return entity

    def file_line(self) -> dict[str, Any]:
        """One line of ``<home>/log/audit/*.log``."""
        line: dict[str, Any] = {
            "affectedObjects": [dict(o) for o in self.affected],
            "auditType": self.kind.file(),
            "author": self.author.file(),
            "changedValues": [dict(c) for c in self.changed],
            "extraAttributes": [dict(a) for a in self.extra],
            "method": self.method,
            "node": self.node,
        }
        if self.source is not None:
            line["source"] = self.source
        line["system"] = SYSTEM_URL
        line["timestamp"] = {
            "epochSecond": self.epoch_ms // 1000,
            "nano": (self.epoch_ms % 1000) * 1_000_000,
        }
        line["version"] = "1.0"
        return line

    def cursor(self) -> str:
        """The ``pageCursor`` naming this event: ``"<epochMillis>,<seq>"``."""
        return f"{self.epoch_ms},{self.seq}"


def _rest_object(item: dict[str, str]) -> dict[str, str]:
    rendered = dict(item)
    if item.get("type") == "USER":
        rendered["uri"] = f"{SYSTEM_URL}/users/{item['name']}"
    elif item.get("type") == "PROJECT":
        rendered["uri"] = f"{SYSTEM_URL}/projects/{item['name']}"
    return rendered


GIT_LABELS = {
    "clone": "clone, protocol:2, cache:miss",
    "shallow_clone": "shallow clone, protocol:2, cache:miss",
    "fetch": "fetch, protocol:2",
    "push": "push",
}


@dataclass(frozen=True, slots=True)
class GitOp:
    """One git operation as the DC access log records it.

    HTTP(S) operations log two requests (ref advertisement, then the pack);
    SSH operations log one. Each request is an ``i`` line and an ``o`` line.
    """

    start_ms: int
    duration_ms: int
    ip: str
    protocol: str
    username: str
    project: str
    repo: str
    operation: str
    bytes_read: int
    bytes_written: int
    request_no: int
    story: str | None = None

    def lines(self) -> list[tuple[int, str]]:
        """(epoch ms, line) pairs for this operation, not yet interleaved."""
        path = f"/{self.project.lower()}/{self.repo}.git"
        conn = _base36(self.request_no * 7919 + 17)
        if self.protocol == "ssh":
            service = (
                "git-receive-pack" if self.operation == "push" else "git-upload-pack"
            )
            action = f"SSH - {service} '{path}'"
            return self._pair(
                self.start_ms,
                self.duration_ms,
                action,
                "-",
                GIT_LABELS[self.operation],
                conn,
                0,
                True,
            )

        service = "git-receive-pack" if self.operation == "push" else "git-upload-pack"
        ua = '"-" "git/2.43.0"'
        refs = f'"GET /scm{path}/info/refs?service={service} HTTP/1.1"'
        pack = f'"POST /scm{path}/{service} HTTP/1.1"'
        refs_ms = min(120, self.duration_ms // 4)
        out = self._pair(
            self.start_ms, refs_ms, refs, ua, "refs, protocol:2", conn, 0, False
        )
        out += self._pair(
            self.start_ms + refs_ms + 5,
            self.duration_ms - refs_ms,
            pack,
            ua,
            GIT_LABELS[self.operation],
            conn,
            1,
            False,
        )
        return out

    def _pair(
        self,
        start: int,
        duration: int,
        action: str,
        details_field: str,
        labels: str,
        conn: str,
        part: int,
        user_on_start: bool,
    ) -> list[tuple[int, str]]:
        rid = f"{_base36(self.request_no)}x{(start // 60000) % 1440}x{part}"
        is_pack = part == 1 or self.protocol == "ssh"
        read = self.bytes_read if is_pack else 0
        written = self.bytes_written if is_pack else 1830
        start_user = self.username if user_on_start else "-"
        i_fields = [
            self.ip,
            self.protocol,
            f"i@{rid}",
            start_user,
            access_time(start),
            action,
            details_field,
            "-",
            "-",
            "-",
            "-",
            "-",
            conn,
        ]
        end = start + duration
        o_fields = [
            self.ip,
            self.protocol,
            f"o@{rid}",
            self.username,
            access_time(end),
            action,
            details_field,
            "200",
            str(read),
            str(written),
            labels,
            str(duration),
            conn,
        ]
        return [(start, " | ".join(i_fields)), (end, " | ".join(o_fields))]


_BROWSER = '"https://bitbucket.internal/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/128"'


@dataclass(frozen=True, slots=True)
class WebRequest:
    """A non-git request in the access log (UI page or REST call)."""

    start_ms: int
    duration_ms: int
    ip: str
    username: str
    path: str
    request_no: int

    def lines(self) -> list[tuple[int, str]]:
        """(epoch ms, line) pairs: the ``i`` line and the ``o`` line."""
        rid = f"{_base36(self.request_no)}x{(self.start_ms // 60000) % 1440}x0"
        action = f'"GET {self.path} HTTP/1.1"'
        ua = _BROWSER
        conn = _base36(self.request_no * 104729 + 3)
        i_fields = [
            self.ip,
            "https",
            f"i@{rid}",
            "-",
            access_time(self.start_ms),
            action,
            ua,
            "-",
            "-",
            "-",
            "-",
            "-",
            conn,
        ]
        end = self.start_ms + self.duration_ms
        o_fields = [
            self.ip,
            "https",
            f"o@{rid}",
            self.username,
            access_time(end),
            action,
            ua,
            "200",
            "0",
            "24817",
            "-",
            str(self.duration_ms),
            conn,
        ]
        return [(self.start_ms, " | ".join(i_fields)), (end, " | ".join(o_fields))]


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One Atlassian organization audit event (``/events-stream`` ``data[]``)."""

    time_ms: int
    processed_ms: int
    body: dict[str, Any] = field(hash=False, compare=False)
    seq: int = 0
    story: str | None = None

    @property
    def id(self) -> str:
        """The event's own UUID."""
        return str(self.body["id"])

    def rendered(self) -> dict[str, Any]:
        """The ``data[]`` element with ``time`` and ``processedAt`` filled in."""
        body = dict(self.body)
        attributes = dict(body["attributes"])
        attributes["time"] = iso_ms(self.time_ms)
        attributes["processedAt"] = iso_ms(self.processed_ms)
        body["attributes"] = attributes
        return body


def iso_ms(epoch_ms: int) -> str:
    """``2021-11-27T17:34:26.108Z`` from epoch milliseconds."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def access_time(epoch_ms: int) -> str:
    """Access-log time ``yyyy-MM-dd HH:mm:ss,SSS``; written in UTC (see files.py)."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f",{epoch_ms % 1000:03d}"


def _base36(number: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    text = ""
    number = abs(number)
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return text

"""What the identity enrichers share: the directory record, matching, writing.

Two kinds of directory feed ``context["identity"]``: an export file
(``enrichers.directory_file``) and a SCIM 2.0 service (``enrichers.scim``).
Several may be configured; they run in config order and the first one that
matches an author wins. Authors Bitbucket itself marks as system, anonymous or
bot (access-token users) are recorded as non-human and never looked up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from collector.model import AuditEvent

IDENTITY_KEY = "identity"
NON_HUMAN_KINDS = frozenset({"system", "anonymous", "bot"})

Status = Literal["active", "suspended", "terminated"]
MatchedBy = Literal["username", "email"]


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    """One person as a directory knows them."""

    username: str
    email: str | None = None
    display_name: str | None = None
    department: str | None = None
    title: str | None = None
    manager: str | None = None
    status: Status | None = None
    mfa_enrolled: bool | None = None
    groups: tuple[str, ...] = ()
    human: bool = True
    _templates: dict[tuple[str, str], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def context(self, matched_by: MatchedBy, directory: str) -> dict[str, Any]:
        """The ``context["identity"]`` value for a match.

        Built once per user and directory and shared by every event of that
        user: context values are read-only once set (renderers and rules only
        read them), and sharing keeps the hot path free of copies.
        """
        template = self._templates.get((matched_by, directory))
        if template is None:
            template = self._template(matched_by, directory)
        return template

    def _template(self, matched_by: MatchedBy, directory: str) -> dict[str, Any]:
        # Built once per user and directory, so a match costs one dict copy.
        template = {
            "matched_by": matched_by,
            "directory": directory,
            "human": self.human,
            "username": self.username,
            "email": self.email,
            "display_name": self.display_name,
            "department": self.department,
            "title": self.title,
            "manager": self.manager,
            "status": self.status,
            "mfa_enrolled": self.mfa_enrolled,
            "groups": list(self.groups),
        }
        self._templates[(matched_by, directory)] = template
        return template


@dataclass(frozen=True, slots=True)
class LookupKeys:
    """How an author can be found: username first, then email (lower-cased)."""

    username: str | None
    email: str | None


def needs_lookup(event: AuditEvent) -> LookupKeys | None:
    """The keys to look ``event``'s author up by, or ``None`` when not to.

    Marks non-human authors on the way. An author already matched by an
    earlier directory is left alone (first match wins).
    """
    current = event.context.get(IDENTITY_KEY)
    if current is not None and (current.get("matched_by") or not current["human"]):
        return None

    actor = event.actor
    if actor.kind in NON_HUMAN_KINDS:
        event.context[IDENTITY_KEY] = {"human": False, "matched_by": None}
        return None

    return lookup_keys(actor.name, actor.email)


@lru_cache(maxsize=65536)
def lookup_keys(name: str | None, email: str | None) -> LookupKeys | None:
    """Lower-cased keys; a name that looks like an email also counts as one."""
    username = name.strip().lower() if name else None
    mail = email.strip().lower() if email else None
    if mail is None and username and "@" in username:
        mail = username
    if not username and not mail:
        return None
    return LookupKeys(username or None, mail or None)


def record_match(
    event: AuditEvent, user: DirectoryUser, matched_by: MatchedBy, directory: str
) -> None:
    """Write a directory match into the event."""
    event.context[IDENTITY_KEY] = user.context(matched_by, directory)


def record_unmatched(event: AuditEvent) -> None:
    """Note a human author no directory knows (yet); a later directory may match."""
    if IDENTITY_KEY in event.context:
        return
    event.context[IDENTITY_KEY] = {
        "human": True,
        "matched_by": None,
        "username": event.actor.name,
        "email": event.actor.email,
    }


def parse_status(value: Any) -> Status | None:
    """A status word, or ``None`` when empty; raises ``ValueError`` otherwise."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text in ("active", "suspended", "terminated"):
        return text  # type: ignore[return-value]  # narrowed by the membership test
    raise ValueError(f"status must be active, suspended or terminated, not {text!r}")


def parse_bool(value: Any) -> bool | None:
    """A yes/no flag from a bool or a word (true/false, yes/no, 1/0)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "y"):
        return True
    if text in ("false", "no", "0", "n"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")

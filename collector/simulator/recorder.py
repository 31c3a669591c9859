"""Appends records to a world: the verbs that activity and stories share."""

from __future__ import annotations

import ipaddress
import json
import random
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from collector.simulator import records as r
from collector.simulator.records import AuditType, Author, CloudEvent, DcEvent, GitOp
from collector.simulator.world import NETWORKS, NetworkSite, Person, World

_CLOUD_SITE = "b7c8d9e0-1f2a-4b3c-9d4e-5f6a7b8c9d0e"


@lru_cache(maxsize=4096)
def site_of(ip: str) -> NetworkSite | None:
    """The simulated network an address belongs to, if any."""
    address = ipaddress.ip_address(ip)
    for site in NETWORKS:
        if address in ipaddress.ip_network(site.cidr):
            return site
    return None


def author(person: Person) -> Author:
    """The DC author block of a person."""
    return Author(person.user_id, person.username)


def user_obj(person: Person) -> dict[str, str]:
    """A USER affected object for a person."""
    return r.obj("USER", person.username, person.user_id)


class Recorder:
    """Appends DC, access-log and Cloud records to ``world``.

    ``rng`` drives the small irregularities: late arrivals and the empty-string
    ``source`` fields Atlassian sends.
    """

    def __init__(self, world: World, rng: random.Random, *, irregular: bool = True):
        self.world = world
        self.rng = rng
        self.irregular = irregular
        self._request_no = 1_000 + len(world.git_ops) + len(world.web_requests)
        self._start_ms = int(world.start.timestamp() * 1000)
        self._end_ms = int(world.end.timestamp() * 1000)

    def in_range(self, ms: int) -> bool:
        """Whether a time falls inside the world's range."""
        return self._start_ms <= ms < self._end_ms

    def dc(
        self,
        ms: int,
        kind: AuditType,
        who: Author,
        source: str | None,
        *,
        affected: Sequence[dict[str, str]] = (),
        changed: Sequence[dict[str, str]] = (),
        extra: Sequence[dict[str, str]] = (),
        method: str = "Browser",
        story: str | None = None,
        late_ms: int | None = None,
    ) -> None:
        """Record one DC audit event (dropped when outside the range)."""
        if not self.in_range(ms):
            return
        if late_ms is None:
            late_ms = 0
            if self.irregular and self.rng.random() < 0.03:
                late_ms = self.rng.randint(5_000, 300_000)
        if self.irregular and source and self.rng.random() < 0.006:
            source = ""
        self.world.dc_events.append(
            DcEvent(
                epoch_ms=ms,
                kind=kind,
                author=who,
                source=source,
                node=self.world.node,
                affected=tuple(affected),
                changed=tuple(changed),
                extra=tuple(extra),
                method=method,
                visible_ms=ms + late_ms,
                story=story,
            )
        )

    def login(
        self,
        person: Person,
        ms: int,
        ip: str,
        *,
        how: str = "form",
        story: str | None = None,
    ) -> None:
        """A successful login."""
        self.dc(
            ms,
            r.LOGIN,
            author(person),
            ip,
            story=story,
            extra=[
                r.attr(
                    "Authentication method",
                    "bitbucket.service.user.audit.attribute.authentication.authmethod",
                    how,
                ),
                r.target(person.username),
            ],
        )

    def login_failed(
        self,
        username: str,
        ms: int,
        ip: str,
        *,
        how: str = "form",
        error: str | None = None,
        story: str | None = None,
    ) -> None:
        """A failed login: author Anonymous, the attempted name in ``target``."""
        reason = error or (
            "Authentication failed because the user does not exist, the "
            "account is inactive, or the provided credentials are "
            "incorrect"
        )
        self.dc(
            ms,
            r.LOGIN_FAILED,
            r.ANONYMOUS,
            ip,
            story=story,
            extra=[
                r.attr(
                    "Error",
                    "bitbucket.service.user.audit.attribute."
                    "authenticationfailure.error",
                    reason,
                ),
                r.attr(
                    "Authentication method",
                    "bitbucket.service.user.audit.attribute.authentication.authmethod",
                    how,
                ),
                r.target(username),
            ],
        )

    def logout(self, person: Person, ms: int, ip: str) -> None:
        """A logout."""
        self.dc(ms, r.LOGOUT, author(person), ip)

    def repo_accessed(
        self,
        person: Person,
        ms: int,
        ip: str,
        project: str,
        repo: str,
        *,
        story: str | None = None,
    ) -> None:
        """A repository page view ("Repository accessed by user")."""
        project_id, repo_id = self.ids(project, repo)
        self.dc(
            ms,
            r.REPO_ACCESSED,
            author(person),
            ip,
            story=story,
            affected=[
                r.obj("PROJECT", project, project_id),
                r.obj("REPOSITORY", repo, repo_id),
            ],
            extra=[r.target(f"{project}/{repo}")],
        )

    def permission(
        self,
        actor: Person,
        ms: int,
        ip: str,
        grantee: Person,
        permission: str,
        scope: str = "global",
        project: str | None = None,
        repo: str | None = None,
        *,
        story: str | None = None,
        twin_gap_ms: int = 0,
    ) -> None:
        """A grant and its "requested" twin, ``twin_gap_ms`` apart (0 = same ms)."""
        requested, granted = {
            "global": (r.GLOBAL_PERM_REQUESTED, r.GLOBAL_PERM_GRANTED),
            "project": (r.PROJECT_PERM_REQUESTED, r.PROJECT_PERM_GRANTED),
            "repository": (r.REPO_PERM_REQUESTED, r.REPO_PERM_GRANTED),
        }[scope]
        affected = [user_obj(grantee)]
        where = "Global"
        if project is not None:
            project_id, repo_id = self.ids(project, repo)
            objects = [r.obj("PROJECT", project, project_id)]
            where = project
            if repo is not None:
                objects.append(r.obj("REPOSITORY", repo, repo_id))
                where = f"{project}/{repo}"
            affected = objects + affected
        extra = [
            r.attr(
                "Permission",
                "bitbucket.service.user.audit.attribute.permission.permission",
                permission,
            ),
            r.details(
                json.dumps(
                    {"permission": permission, "user": grantee.username},
                    separators=(",", ":"),
                )
            ),
            r.target(where),
        ]
        for offset, kind in ((0, requested), (twin_gap_ms, granted)):
            self.dc(
                ms + offset,
                kind,
                author(actor),
                ip,
                affected=affected,
                extra=extra,
                story=story,
                late_ms=0 if story else None,
            )

    def group_member(
        self,
        actor: Person | None,
        ms: int,
        ip: str | None,
        group: str,
        member: Person,
        *,
        added: bool = True,
        story: str | None = None,
    ) -> None:
        """A user added to (or removed from) a group."""
        kind = r.GROUP_MEMBER_ADDED if added else r.GROUP_MEMBER_REMOVED
        who = author(actor) if actor else r.SYSTEM
        self.dc(
            ms,
            kind,
            who,
            ip,
            story=story,
            method="Browser" if actor else "System",
            affected=[r.obj("GROUP", group, group), user_obj(member)],
            extra=[
                r.target(group),
                r.attr(
                    "Parent group",
                    "bitbucket.service.user.audit.attribute.groupmembership."
                    "parentgroup",
                    group,
                ),
                r.details(
                    json.dumps(
                        {"entities": [member.username], "membership": "GROUP_USER"},
                        separators=(",", ":"),
                    )
                ),
            ],
        )

    def token(
        self,
        person: Person,
        ms: int,
        ip: str,
        kind: AuditType,
        token_id: str,
        name: str,
        permissions: list[str],
        *,
        changed: Sequence[dict[str, str]] = (),
        story: str | None = None,
    ) -> None:
        """A personal access token created, changed or deleted."""
        owner = {
            "id": int(person.user_id),
            "name": person.username,
            "slug": person.username,
        }
        info = {
            "id": token_id,
            "tokenOwner": owner,
            "name": name,
            "permissions": permissions,
        }
        key = "bitbucket.access.tokens.audit.attribute.accesstoken."
        self.dc(
            ms,
            kind,
            author(person),
            ip,
            story=story,
            changed=changed,
            affected=[user_obj(person)],
            extra=[
                r.details(json.dumps(info, separators=(",", ":"))),
                r.attr("ID", key + "id", token_id),
                r.attr("Name", key + "name", name),
                r.attr("Permissions", key + "permissions", ", ".join(permissions)),
                r.target("GLOBAL"),
            ],
        )

    def git(
        self,
        person: Person,
        ms: int,
        ip: str,
        protocol: str,
        project: str,
        repo: str,
        operation: str,
        *,
        story: str | None = None,
    ) -> None:
        """One git operation in the access log."""
        if not self.in_range(ms):
            return
        rng = self.rng
        size = {
            "clone": rng.randint(2_000_000, 180_000_000),
            "shallow_clone": rng.randint(300_000, 20_000_000),
            "fetch": rng.randint(2_000, 900_000),
            "push": rng.randint(1_000, 400_000),
        }[operation]
        read, written = (size, 2_400) if operation == "push" else (1_100, size)
        duration = 300 + size // 40_000 + rng.randint(0, 900)
        self._request_no += 1
        self.world.git_ops.append(
            GitOp(
                start_ms=ms,
                duration_ms=duration,
                ip=ip,
                protocol=protocol,
                username=person.username,
                project=project,
                repo=repo,
                operation=operation,
                bytes_read=read,
                bytes_written=written,
                request_no=self._request_no,
                story=story,
            )
        )

    def web(self, person: Person, ms: int, ip: str, path: str) -> None:
        """One non-git request in the access log."""
        if not self.in_range(ms):
            return
        self._request_no += 1
        self.world.web_requests.append(
            r.WebRequest(
                start_ms=ms,
                duration_ms=self.rng.randint(40, 900),
                ip=ip,
                username=person.username,
                path=path,
                request_no=self._request_no,
            )
        )

    def cloud(
        self,
        person: Person,
        ms: int,
        ip: str,
        action: str,
        message: str,
        *,
        context: Sequence[dict[str, Any]] = (),
        auth: dict[str, str] | None = None,
        story: str | None = None,
        processed_delay_ms: int | None = None,
    ) -> None:
        """One Atlassian organization audit event."""
        if not self.in_range(ms):
            return
        rng = self.rng
        if processed_delay_ms is None:
            processed_delay_ms = rng.randint(300, 3_000)
            if self.irregular and rng.random() < 0.03:
                processed_delay_ms = rng.randint(60_000, 600_000)
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        actor: dict[str, Any] = {
            "id": person.cloud_id,
            "name": person.display_name,
            "email": person.email,
        }
        if auth is not None:
            actor["auth"] = auth
        site = site_of(ip)
        location: dict[str, Any] = {"ip": ip}
        if site is not None:
            location.update(
                {"countryName": site.country_name, "city": site.city, "regionName": ""}
            )
        body = {
            "type": "events",
            "id": event_id,
            "attributes": {
                "time": "",
                "processedAt": "",
                "action": action,
                "actor": actor,
                "context": list(context) or [self.user_context(person)],
                "container": [
                    {
                        "id": _CLOUD_SITE,
                        "type": "sites",
                        "attributes": {"siteHostName": "example-health.atlassian.net"},
                        "links": {"alt": "https://example-health.atlassian.net"},
                    }
                ],
                "location": location,
            },
            "message": {"content": message, "format": "simple"},
            "links": {
                "self": "https://api.atlassian.com/admin/v1/orgs/"
                f"{self.world.org_id}/events/{event_id}"
            },
        }
        self.world.cloud_events.append(
            CloudEvent(
                time_ms=ms, processed_ms=ms + processed_delay_ms, body=body, story=story
            )
        )

    @staticmethod
    def user_context(person: Person) -> dict[str, Any]:
        """A ``context[]`` entry naming a user."""
        return {
            "id": person.cloud_id,
            "type": "users",
            "attributes": {"name": person.display_name, "email": person.email},
            "links": {"self": f"https://api.atlassian.com/users/{person.cloud_id}"},
        }

    def ids(self, project: str, repo: str | None) -> tuple[str, str | None]:
        """Project id and repository id (stable per world)."""
        for index, candidate in enumerate(self.world.projects):
            if candidate.key == project:
                if repo is None or repo not in candidate.repos:
                    return candidate.id, None
                return candidate.id, str(index * 100 + candidate.repos.index(repo) + 1)
        return "0", None

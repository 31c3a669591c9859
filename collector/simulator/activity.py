"""Normal activity: working days, CI, admins, the collector's own polls."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from collector.simulator import records as r
from collector.simulator.recorder import Recorder, author, user_obj
from collector.simulator.world import COLLECTOR_ACCOUNT, Person, World

_HOUR = 3_600_000
_MINUTE = 60_000
# Fixed offsets are enough here: nothing depends on the DST date.
_UTC_OFFSET_H = {"boston": -5, "london": 0}
_REPO_VIEWS = {"developer": 22, "data": 16, "viewer": 10, "admin": 6}


def generate(world: World) -> None:
    """Append a world's normal activity (everything that is not a story)."""
    rng = random.Random(f"{world.seed}:activity")
    rec = Recorder(world, rng)
    humans = [p for p in world.people if p.human]

    for day in _days(world):
        for person in humans:
            if person.status == "active":
                _work_day(rec, person, day)
            elif person.status == "suspended" and rng.random() < 0.3:
                _locked_out(rec, person, day)
        _admin_day(rec, world, humans, day)
        _system_day(rec, day)

    _ci(rec, world)
    _collector_polls(rec, world)
    _coverage_raised(rec, world)


def finalize(world: World) -> None:
    """Number the events the way the server would have, then sort them.

    The internal id (``seq``) follows insertion order, which is the order the
    events became visible; the API lists them by (timestamp, id).
    """
    world.dc_events.sort(key=lambda e: (e.visible_ms, e.epoch_ms))
    world.dc_events[:] = [_renumber(e, i) for i, e in enumerate(world.dc_events, 1)]
    world.dc_events.sort(key=lambda e: (e.epoch_ms, e.seq))

    world.cloud_events.sort(key=lambda e: (e.processed_ms, e.time_ms, e.id))
    world.cloud_events[:] = [
        r.CloudEvent(e.time_ms, e.processed_ms, e.body, i, e.story)
        for i, e in enumerate(world.cloud_events, 1)
    ]
    world.git_ops.sort(key=lambda g: (g.start_ms, g.request_no))
    world.web_requests.sort(key=lambda w: (w.start_ms, w.request_no))


def _renumber(event: r.DcEvent, seq: int) -> r.DcEvent:
    return r.DcEvent(
        epoch_ms=event.epoch_ms,
        kind=event.kind,
        author=event.author,
        source=event.source,
        node=event.node,
        affected=event.affected,
        changed=event.changed,
        extra=event.extra,
        method=event.method,
        visible_ms=event.visible_ms,
        seq=seq,
        story=event.story,
    )


def _days(world: World) -> list[int]:
    first = world.start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    moment = first - timedelta(days=1)
    while moment < world.end + timedelta(days=1):
        days.append(int(moment.timestamp() * 1000))
        moment += timedelta(days=1)
    return days


def _local_midnight(day_ms: int, person: Person) -> int:
    return day_ms - _UTC_OFFSET_H[person.office] * _HOUR


def _weekday(day_ms: int) -> bool:
    return datetime.fromtimestamp(day_ms / 1000, UTC).weekday() < 5


def _repos(world: World, person: Person, rng: random.Random) -> tuple[str, str]:
    projects = [p for p in world.projects if p.key in person.projects]
    project = rng.choice(projects or world.projects[:1])
    return project.key, rng.choice(project.repos)


def _work_day(rec: Recorder, person: Person, day_ms: int) -> None:
    rng = rec.rng
    workday = _weekday(day_ms)
    midnight = _local_midnight(day_ms, person)
    if workday and rng.random() < 0.9:
        begin = midnight + 8 * _HOUR + rng.randint(0, 2 * _HOUR)
        _session(
            rec,
            person,
            begin,
            rng.randint(7 * _HOUR, 19 * _HOUR // 2),
            rng.choice((person.lan_ip,) * 3 + (person.vpn_ip,)),
            1.0,
        )
    elif not workday and rng.random() < 0.12:
        begin = midnight + 10 * _HOUR + rng.randint(0, 3 * _HOUR)
        _session(rec, person, begin, rng.randint(_HOUR, 3 * _HOUR), person.vpn_ip, 0.3)
    if person.role == "developer" and rng.random() < 0.03:
        begin = midnight + 21 * _HOUR + rng.randint(0, 2 * _HOUR)
        _session(
            rec, person, begin, rng.randint(_HOUR // 2, 2 * _HOUR), person.vpn_ip, 0.2
        )


def _session(
    rec: Recorder, person: Person, begin: int, length: int, ip: str, intensity: float
) -> None:
    rng = rec.rng
    world = rec.world
    if rng.random() < 0.012:
        rec.login_failed(person.username, begin - rng.randint(5_000, 40_000), ip)
    rec.login(person, begin, ip)
    for _ in range(rng.randint(2, 5)):
        rec.cloud(
            person,
            begin + rng.randint(0, length),
            person.egress_ip,
            "user_login",
            f"{person.display_name} logged in",
        )
    if rng.random() < 0.02:
        rec.cloud(
            person,
            begin - rng.randint(5_000, 60_000),
            person.egress_ip,
            "user_login_failed",
            f"{person.display_name} failed to log in",
        )

    views = max(0, round(rng.gauss(_REPO_VIEWS.get(person.role, 8) * intensity, 4)))
    for _ in range(views):
        at = begin + rng.randint(1_000, length)
        project, repo = _repos(world, person, rng)
        rec.repo_accessed(person, at, ip, project, repo)
        if rng.random() < 0.3:
            rec.web(
                person,
                at - rng.randint(0, 400),
                ip,
                f"/projects/{project}/repos/{repo}/browse",
            )

    if person.role in {"developer", "data"}:
        for _ in range(round(rng.randint(1, 6) * intensity)):
            project, repo = _repos(world, person, rng)
            operation = rng.choices(("fetch", "push", "clone"), (55, 30, 15))[0]
            protocol = "ssh" if rng.random() < 0.6 else "https"
            rec.git(
                person,
                begin + rng.randint(1_000, length),
                ip,
                protocol,
                project,
                repo,
                operation,
            )
    _developer_extras(rec, person, begin, length, ip)

    if rng.random() < 0.5:
        rec.logout(person, begin + length, ip)
        if rng.random() < 0.5:
            rec.cloud(
                person,
                begin + length + rng.randint(0, 60_000),
                person.egress_ip,
                "user_logout",
                f"{person.display_name} logged out",
            )


def _developer_extras(
    rec: Recorder, person: Person, begin: int, length: int, ip: str
) -> None:
    rng = rec.rng
    if person.role not in {"developer", "data"}:
        return
    if rng.random() < 0.04:
        at = begin + rng.randint(0, length // 2)
        token_id = str(rng.randint(100_000_000_000, 999_999_999_999))
        name = rng.choice(("ci", "laptop", "script", "ide", "backup"))
        rights = (
            ["PROJECT_READ", "REPO_READ"]
            if rng.random() < 0.6
            else ["PROJECT_READ", "REPO_WRITE"]
        )
        rec.token(person, at, ip, r.PAT_CREATED, token_id, name, rights)
        if rng.random() < 0.3:
            new_name = f"{name}-{rng.randint(2, 9)}"
            rec.token(
                person,
                at + rng.randint(_MINUTE, _HOUR),
                ip,
                r.PAT_CHANGED,
                token_id,
                new_name,
                rights,
                changed=[
                    r.change(
                        "Name",
                        "bitbucket.access.tokens.audit.attribute.accesstoken.name",
                        name,
                        new_name,
                    )
                ],
            )
        elif rng.random() < 0.2:
            rec.token(
                person,
                at + rng.randint(_MINUTE, _HOUR),
                ip,
                r.PAT_DELETED,
                token_id,
                name,
                rights,
            )
    if rng.random() < 0.02:
        key_id = str(rng.randint(10, 9_999))
        label = f"{person.username}@laptop"
        rec.dc(
            begin + rng.randint(0, length),
            r.SSH_KEY_ADDED,
            author(person),
            ip,
            affected=[user_obj(person)],
            extra=[
                r.attr("Key ID", "bitbucket.ssh.audit.attr.sshkey.id", key_id),
                r.attr("Label", "bitbucket.ssh.audit.attr.sshkey.label", label),
            ],
        )
    if rng.random() < 0.015:
        project, _repo = _repos(rec.world, person, rng)
        repo = f"{rng.choice(('spike', 'poc', 'tool', 'lib'))}-{rng.randint(1, 999)}"
        at = begin + rng.randint(0, length)
        project_id, _ = rec.ids(project, None)
        objects = [
            r.obj("PROJECT", project, project_id),
            r.obj("REPOSITORY", repo, str(rng.randint(5_000, 9_000))),
        ]
        info = json.dumps(
            {"project": project, "repository": repo}, separators=(",", ":")
        )
        rec.dc(
            at,
            r.REPO_CREATED,
            author(person),
            ip,
            affected=objects,
            extra=[r.details(info), r.target(f"{project}/{repo}")],
        )
        rec.dc(
            at,
            r.REPO_ACCESSED,
            author(person),
            ip,
            affected=objects,
            extra=[r.target(f"{project}/{repo}")],
        )


def _locked_out(rec: Recorder, person: Person, day_ms: int) -> None:
    at = _local_midnight(day_ms, person) + 9 * _HOUR + rec.rng.randint(0, 4 * _HOUR)
    for attempt in range(rec.rng.randint(1, 2)):
        rec.login_failed(person.username, at + attempt * 20_000, person.lan_ip)


def _admin_day(rec: Recorder, world: World, humans: list[Person], day_ms: int) -> None:
    rng = rec.rng
    admins = [p for p in humans if p.role == "admin" and p.status == "active"]
    leads = [p for p in humans if "project-admins" in p.groups and p.status == "active"]
    active = [p for p in humans if p.status == "active"]
    if not admins or not _weekday(day_ms):
        return

    for _ in range(rng.randint(10, 20)):
        admin = rng.choice(admins)
        at = _local_midnight(day_ms, admin) + 9 * _HOUR + rng.randint(0, 8 * _HOUR)
        member = rng.choice(active)
        choice = rng.random()
        if choice < 0.35:
            group = rng.choice(("developers", "phi-access", "release-managers"))
            rec.group_member(
                admin, at, admin.lan_ip, group, member, added=rng.random() < 0.75
            )
        elif choice < 0.6:
            project, repo = _repos(world, member, rng)
            rec.permission(
                admin,
                at,
                admin.lan_ip,
                member,
                rng.choice(("REPO_READ", "REPO_WRITE")),
                "repository",
                project,
                repo,
                twin_gap_ms=rng.choice((0, 0, 1, 3)),
            )
        elif choice < 0.75:
            rec.dc(
                at,
                r.AUDIT_SEARCH,
                author(admin),
                admin.lan_ip,
                extra=search_attributes("", rng.randint(20, 200), at),
            )
        elif choice < 0.9:
            rec.permission(
                admin, at, admin.lan_ip, member, "LICENSED_USER", twin_gap_ms=1
            )
        else:
            project, _repo = _repos(world, member, rng)
            rec.permission(
                admin, at, admin.lan_ip, member, "PROJECT_READ", "project", project
            )

    for lead in leads:
        if rng.random() < 0.3:
            at = _local_midnight(day_ms, lead) + 10 * _HOUR + rng.randint(0, 6 * _HOUR)
            member = rng.choice(active)
            project, repo = _repos(world, lead, rng)
            rec.permission(
                lead, at, lead.lan_ip, member, "REPO_WRITE", "repository", project, repo
            )
    if rng.random() < 0.5:
        admin = rng.choice(admins)
        at = _local_midnight(day_ms, admin) + 11 * _HOUR + rng.randint(0, 4 * _HOUR)
        member = rng.choice(active)
        rec.cloud(
            admin,
            at,
            admin.egress_ip,
            "user_granted_role",
            f"{admin.display_name} granted a product role to {member.display_name}",
            context=[rec.user_context(member)],
        )


def _system_day(rec: Recorder, day_ms: int) -> None:
    at = day_ms + 2 * _HOUR + rec.rng.randint(0, _HOUR)
    rec.dc(
        at,
        r.SEARCH_SETTINGS,
        r.SYSTEM,
        None,
        method="System",
        changed=[
            r.change(
                "Username",
                "bitbucket.search.audit.changedvalue."
                "elasticsearchconfigurationchange.username",
                None,
                "bitbucket",
            )
        ],
        extra=[r.target("Elasticsearch")],
    )


def _ci(rec: Recorder, world: World) -> None:
    rng = rec.rng
    jenkins = world.person("svc-jenkins")
    renovate = world.person("svc-renovate")
    begin = int(world.start.timestamp() * 1000)
    end = int(world.end.timestamp() * 1000)
    at = begin
    while at < end:
        project, repo = _repos(world, jenkins, rng)
        rec.git(jenkins, at, jenkins.lan_ip, "https", project, repo, "shallow_clone")
        if rng.random() < 0.5:
            project, repo = _repos(world, jenkins, rng)
            rec.git(
                jenkins, at + 4_000, jenkins.lan_ip, "https", project, repo, "fetch"
            )
        if rng.random() < 0.1:
            rec.login(jenkins, at - 200, jenkins.lan_ip, how="basic")
        at += rng.randint(6 * _MINUTE, 14 * _MINUTE)
    at = begin + 7 * _MINUTE
    while at < end:
        project, repo = _repos(world, renovate, rng)
        rec.git(renovate, at, renovate.lan_ip, "https", project, repo, "fetch")
        rec.git(renovate, at + 20_000, renovate.lan_ip, "https", project, repo, "push")
        at += rng.randint(30 * _MINUTE, 60 * _MINUTE)


def _collector_polls(rec: Recorder, world: World) -> None:
    """Audit searches by the collector account: the noise bbaudit must suppress."""
    collector = world.person(COLLECTOR_ACCOUNT)
    at = int(world.start.timestamp() * 1000) + 90_000
    end = int(world.end.timestamp() * 1000)
    while at < end:
        rec.dc(
            at,
            r.AUDIT_SEARCH,
            author(collector),
            collector.lan_ip,
            late_ms=0,
            extra=search_attributes("", rec.rng.randint(0, 400), at),
        )
        at += 10 * _MINUTE


def _coverage_raised(rec: Recorder, world: World) -> None:
    """An admin raises two coverage areas in one millisecond (as in the fixture)."""
    admins = [p for p in world.people if p.role == "admin" and p.status == "active"]
    if not admins:
        return
    admin = admins[0]
    at = int(world.start.timestamp() * 1000) + 3 * _HOUR + 17_994
    key = "atlassian.audit.event.change.coverage.level"
    for area in ("end_user_activity", "permissions"):
        rec.dc(
            at,
            r.AUDIT_CONFIG,
            author(admin),
            admin.lan_ip,
            late_ms=0,
            changed=[
                r.change("Coverage Level", key, f"{area} : base", f"{area} : full")
            ],
        )


def search_attributes(query: str, results: int, at_ms: int) -> list[dict[str, str]]:
    """extraAttributes of an "Audit Log search performed" event."""
    prefix = "atlassian.audit.event.attribute."
    window = f"{r.iso_ms(at_ms - 3_600_000)} - {r.iso_ms(at_ms)}"
    return [
        r.attr("Query", prefix + "query", query),
        r.attr("Results returned", prefix + "results", str(results)),
        r.attr("Timestamp Range", prefix + "timestamp", window),
    ]

"""Injected attack stories, each with the rules it should raise.

Stories sit in the last five hours of the world so that first-seen baselines
have learned from everything before. Four of them share one compromised actor
(``impossible_travel``, ``permission_escalation``, ``protections_disabled``,
``data_export``) so that risk aggregation fires on that actor.

Sigma ids are the SigmaHQ rule ids of ``/work/shared/data/sigma``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime

from collector.simulator import records as r
from collector.simulator.recorder import Recorder, author, user_obj
from collector.simulator.world import Person, StoryInfo, World

_MINUTE = 60_000
_HOUR = 3_600_000

SIGMA_GLOBAL_PERMISSION = "aac6c4f4-87c7-4961-96ac-c3fd3a42c310"
SIGMA_AUDIT_CONFIG = "6aa12161-235a-4dfb-9c74-fe08df8d8da1"
SIGMA_GLOBAL_SECRET_RULE = "e16cf0f0-ee88-4901-bd0b-4c8d13d9ee05"
SIGMA_EXEMPT_REPO = "b91e8d5e-0033-44fe-973f-b730316f23a1"
SIGMA_PROJECT_ALLOWLIST = "42ccce6d-7bd3-4930-95cd-e4d83fa94a30"
SIGMA_SSH_SETTINGS = "16ab6143-510a-44e2-a615-bdb80b8317fc"
SIGMA_FULL_EXPORT = "195e1b9d-bfc2-4ffa-ab4e-35aef69815f8"
# The file titled "User Details Export" selects the permissions-export actions.
SIGMA_PERMISSIONS_EXPORT = "5259cbf2-0a75-48bf-b57a-c54d6fabaef3"
SIGMA_LOGIN_FAILURE = "70ed1d26-0050-4b38-a599-92c53d57d45a"

# Public-looking on purpose: a geo enricher that skips reserved ranges still
# places the story's IPs (all three ranges appear in MaxMind's test databases).
ATTACKER_SG = "67.43.156.66"
CLONER_CN = "175.16.199.44"
BRUTE_SE = "89.160.20.77"


class _Cast:
    """Who plays which part, chosen deterministically from the directory."""

    def __init__(self, world: World) -> None:
        rng = random.Random(f"{world.seed}:cast")
        workers = [
            p
            for p in world.people
            if p.human
            and p.status == "active"
            and p.role == "developer"
            and int(p.user_id) >= 26
        ]
        if len(workers) < 3:
            workers = [p for p in world.people if p.human and p.status == "active"]
        boston = [p for p in workers if p.office == "boston"] or workers
        self.compromised = rng.choice(boston)
        others = [p for p in workers if p is not self.compromised]
        self.cloner, self.brute_target = rng.sample(others, 2)
        departed = [p for p in world.people if p.status == "terminated"]
        self.departed = departed[0] if departed else None


def inject_all(world: World) -> None:
    """Append every story's records to ``world`` and list them in ``world.stories``."""
    cast = _Cast(world)
    rec = Recorder(world, random.Random(f"{world.seed}:stories"), irregular=False)
    end = int(world.end.timestamp() * 1000)
    steps: list[Callable[[Recorder, _Cast, int], StoryInfo | None]] = [
        brute_force,
        mass_clone,
        impossible_travel,
        permission_escalation,
        protections_disabled,
        data_export,
        departed_identity,
        risk_aggregation,
    ]
    for step in steps:
        info = step(rec, cast, end)
        if info is not None:
            world.stories.append(info)


def _info(
    name: str,
    rules: tuple[str, ...],
    actor: Person | str,
    description: str,
    start_ms: int,
    end_ms: int,
    ip: str | None = None,
    sigma: tuple[str, ...] = (),
) -> StoryInfo:
    return StoryInfo(
        name=name,
        rule_ids=rules + tuple(f"sigma:{s}" for s in sigma),
        actor=actor if isinstance(actor, str) else actor.username,
        description=description,
        start=datetime.fromtimestamp(start_ms / 1000, UTC),
        end=datetime.fromtimestamp(end_ms / 1000, UTC),
        source_ip=ip,
    )


def brute_force(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """40 failed logins for one name from one IP in under 5 minutes, then a success."""
    name = "brute_force"
    victim = cast.brute_target
    begin = end - 5 * _HOUR
    for attempt in range(40):
        rec.login_failed(
            victim.username,
            begin + attempt * 6_700 + attempt % 3,
            BRUTE_SE,
            how="basic",
            story=name,
        )
    success = begin + 40 * 6_700 + 9_000
    rec.login(victim, success, BRUTE_SE, how="basic", story=name)
    project, repo = victim_repo(rec, victim)
    rec.repo_accessed(victim, success + 40_000, BRUTE_SE, project, repo, story=name)
    return _info(
        name,
        ("bb.brute_force", "bb.ip_outside_allowlist"),
        victim,
        f"40 failed logins for {victim.username} from {BRUTE_SE} within "
        "5 minutes, then a successful basic-auth login from the same IP",
        begin,
        success + 40_000,
        BRUTE_SE,
        (SIGMA_LOGIN_FAILURE,),
    )


def mass_clone(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """One user clones 35 distinct repositories over SSH in about 4.5 minutes."""
    name = "mass_clone"
    actor = cast.cloner
    begin = end - 4 * _HOUR
    repos = [(p.key, repo) for p in rec.world.projects for repo in p.repos][:35]
    for index, (project, repo) in enumerate(repos):
        rec.git(
            actor,
            begin + index * 7_700,
            CLONER_CN,
            "ssh",
            project,
            repo,
            "clone",
            story=name,
        )
    last = begin + len(repos) * 7_700
    return _info(
        name,
        ("bb.mass_clone", "bb.ip_outside_allowlist"),
        actor,
        f"{actor.username} clones {len(repos)} distinct repositories over "
        f"SSH from {CLONER_CN} (hosting ASN, never seen) in about 5 minutes",
        begin,
        last,
        CLONER_CN,
    )


def impossible_travel(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """Office login in Boston, then 20 minutes later from a Singapore hosting ASN."""
    name = "impossible_travel"
    actor = cast.compromised
    begin = end - 3 * _HOUR
    far = begin + 20 * _MINUTE
    rec.login(actor, begin, actor.lan_ip, story=name)
    rec.cloud(
        actor,
        begin + 2 * _MINUTE,
        actor.egress_ip,
        "user_login",
        f"{actor.display_name} logged in",
        story=name,
    )
    rec.login(actor, far, ATTACKER_SG, story=name)
    rec.cloud(
        actor,
        far + _MINUTE,
        ATTACKER_SG,
        "user_login",
        f"{actor.display_name} logged in",
        story=name,
    )
    return _info(
        name,
        (
            "bb.impossible_travel",
            "bb.new_country",
            "bb.new_asn",
            "bb.new_source_ip",
            "bb.ip_outside_allowlist",
        ),
        actor,
        f"{actor.username} logs in from the Boston office, then 20 minutes "
        f"later from {ATTACKER_SG} (Singapore, hosting ASN); same on Cloud",
        begin,
        far + _MINUTE,
        ATTACKER_SG,
    )


def permission_escalation(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """Self-granted SYS_ADMIN, self-added to the admin group, token read -> admin."""
    name = "permission_escalation"
    actor = cast.compromised
    begin = end - 3 * _HOUR + 25 * _MINUTE
    rec.permission(actor, begin, ATTACKER_SG, actor, "SYS_ADMIN", story=name)
    rec.group_member(
        actor, begin + 40_000, ATTACKER_SG, "bitbucket-admins", actor, story=name
    )
    token_id = "731946205813"
    read = ["PROJECT_READ", "REPO_READ"]
    admin = ["PROJECT_ADMIN", "REPO_ADMIN"]
    rec.token(
        actor,
        begin + 90_000,
        ATTACKER_SG,
        r.PAT_CREATED,
        token_id,
        "automation",
        read,
        story=name,
    )
    # The upgrade arrives late in the API: only a collector with overlap sees it.
    rec.dc(
        begin + 150_000,
        r.PAT_CHANGED,
        author(actor),
        ATTACKER_SG,
        story=name,
        late_ms=120_000,
        affected=[user_obj(actor)],
        changed=[
            r.change(
                "Permissions",
                "bitbucket.access.tokens.audit.attribute.accesstoken.permissions",
                ", ".join(read),
                ", ".join(admin),
            )
        ],
        extra=[
            r.attr(
                "ID", "bitbucket.access.tokens.audit.attribute.accesstoken.id", token_id
            ),
            r.target("GLOBAL"),
        ],
    )
    rec.cloud(
        actor,
        begin + 5 * _MINUTE,
        ATTACKER_SG,
        "added_org_admin",
        f"{actor.display_name} added {actor.display_name} as an organization admin",
        context=[rec.user_context(actor)],
        story=name,
    )
    return _info(
        name,
        ("bb.permission_escalation",),
        actor,
        f"{actor.username} grants itself SYS_ADMIN, joins bitbucket-admins, "
        "raises a token from read to admin, and becomes Cloud org admin",
        begin,
        begin + 5 * _MINUTE,
        ATTACKER_SG,
        (SIGMA_GLOBAL_PERMISSION,),
    )


def protections_disabled(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """Audit coverage and retention lowered, secret scanning weakened, SSH changed."""
    name = "protections_disabled"
    actor = cast.compromised
    who = author(actor)
    begin = end - 3 * _HOUR + 32 * _MINUTE
    coverage = "atlassian.audit.event.change.coverage.level"
    for area, low in (("security", "base"), ("end_user_activity", "off")):
        rec.dc(
            begin,
            r.AUDIT_CONFIG,
            who,
            ATTACKER_SG,
            story=name,
            changed=[
                r.change(
                    "Coverage Level", coverage, f"{area} : full", f"{area} : {low}"
                )
            ],
        )
    rec.dc(
        begin + 1_000,
        r.AUDIT_CONFIG,
        who,
        ATTACKER_SG,
        story=name,
        changed=[
            r.change(
                "Retention",
                "atlassian.audit.event.change.retention",
                "3 Years",
                "7 Days",
            )
        ],
    )
    rule = json.dumps(
        {"id": 4, "name": "AWS access key", "scope": "GLOBAL"}, separators=(",", ":")
    )
    rec.dc(
        begin + 2 * _MINUTE,
        r.GLOBAL_SECRET_RULE_DELETED,
        who,
        ATTACKER_SG,
        story=name,
        extra=[r.details(rule), r.target("AWS access key")],
    )
    project_id, repo_id = rec.ids("PHI", "ehr-gateway")
    rec.dc(
        begin + 3 * _MINUTE,
        r.SECRET_EXEMPT_REPO,
        who,
        ATTACKER_SG,
        story=name,
        affected=[
            r.obj("PROJECT", "PHI", project_id),
            r.obj("REPOSITORY", "ehr-gateway", repo_id),
        ],
        extra=[r.target("PHI/ehr-gateway")],
    )
    rec.dc(
        begin + 3 * _MINUTE + 30_000,
        r.PROJECT_SECRET_ALLOWLIST,
        who,
        ATTACKER_SG,
        story=name,
        affected=[r.obj("PROJECT", "PHI", project_id)],
        extra=[
            r.target("PHI"),
            r.details(
                json.dumps(
                    {"pathRegex": ".*", "lineRegex": ".*"}, separators=(",", ":")
                )
            ),
        ],
    )
    rec.dc(
        begin + 4 * _MINUTE,
        r.SSH_SETTINGS,
        who,
        ATTACKER_SG,
        story=name,
        changed=[
            r.change(
                "Accepted key types",
                "bitbucket.ssh.audit.changedvalue.keytypes",
                "ed25519, ecdsa",
                "ed25519, ecdsa, rsa, dsa",
            )
        ],
        extra=[r.target("SSH")],
    )
    return _info(
        name,
        ("bb.protection_disabled",),
        actor,
        f"{actor.username} lowers audit coverage (security full -> base, "
        "end_user_activity full -> off) and retention (3 Years -> 7 Days), "
        "deletes a global secret scanning rule, exempts PHI/ehr-gateway, "
        "adds a catch-all allowlist rule and weakens SSH key types",
        begin,
        begin + 4 * _MINUTE,
        ATTACKER_SG,
        (
            SIGMA_AUDIT_CONFIG,
            SIGMA_GLOBAL_SECRET_RULE,
            SIGMA_EXEMPT_REPO,
            SIGMA_PROJECT_ALLOWLIST,
            SIGMA_SSH_SETTINGS,
        ),
    )


def data_export(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """A full data export and a user permissions export."""
    name = "data_export"
    actor = cast.compromised
    who = author(actor)
    begin = end - 3 * _HOUR + 40 * _MINUTE
    rec.dc(
        begin,
        r.FULL_EXPORT,
        who,
        ATTACKER_SG,
        story=name,
        extra=[
            r.target("GLOBAL"),
            r.details(
                json.dumps({"exportId": "9f1c", "scope": "all"}, separators=(",", ":"))
            ),
        ],
    )
    rec.dc(
        begin + 45_000,
        r.PERMISSIONS_EXPORT,
        who,
        ATTACKER_SG,
        story=name,
        extra=[r.target("GLOBAL")],
    )
    return _info(
        name,
        (),
        actor,
        f"{actor.username} triggers a full data export and starts a user "
        "permissions export",
        begin,
        begin + 45_000,
        ATTACKER_SG,
        (SIGMA_FULL_EXPORT, SIGMA_PERMISSIONS_EXPORT),
    )


def departed_identity(rec: Recorder, cast: _Cast, end: int) -> StoryInfo | None:
    """A terminated employee logs in from home and clones three repositories."""
    name = "departed_identity"
    actor = cast.departed
    if actor is None:
        return None
    begin = end - 2 * _HOUR
    rec.login(actor, begin, actor.home_ip, story=name)
    for index, (project, repo) in enumerate(
        [("PAY", "ledger"), ("PHI", "fhir-adapter"), ("INFRA", "terraform-live")]
    ):
        at = begin + (index + 1) * 2 * _MINUTE
        rec.repo_accessed(actor, at, actor.home_ip, project, repo, story=name)
        rec.git(
            actor,
            at + 20_000,
            actor.home_ip,
            "https",
            project,
            repo,
            "clone",
            story=name,
        )
    return _info(
        name,
        ("bb.inactive_identity", "bb.ip_outside_allowlist"),
        actor,
        f"{actor.username} (terminated in the directory) logs in from a home "
        "ISP and clones PAY/ledger, PHI/fhir-adapter and INFRA/terraform-live",
        begin,
        begin + 7 * _MINUTE,
        actor.home_ip,
    )


def risk_aggregation(rec: Recorder, cast: _Cast, end: int) -> StoryInfo:
    """Not a story of its own: the sum of the compromised actor's stories."""
    begin = end - 3 * _HOUR
    return _info(
        "risk_aggregation",
        ("bb.risk_aggregation",),
        cast.compromised,
        f"{cast.compromised.username} raises five or more distinct rules "
        "within an hour (travel, new country/ASN/IP, escalation, "
        "protections disabled)",
        begin,
        begin + 45 * _MINUTE,
        ATTACKER_SG,
    )


def victim_repo(rec: Recorder, person: Person) -> tuple[str, str]:
    """The first repository of the person's first project."""
    for project in rec.world.projects:
        if project.key in person.projects:
            return project.key, project.repos[0]
    return rec.world.projects[0].key, rec.world.projects[0].repos[0]

"""The simulated organisation: people (a directory) and projects."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

from collector.simulator.world import COLLECTOR_ACCOUNT, Person, Project

_FIRST_TEXT = """
james mary john patricia robert jennifer michael linda david elizabeth william
barbara richard susan joseph jessica thomas sarah charles karen chris lisa
daniel nancy matthew betty anthony sandra mark ashley paul kim steven emily
andrew donna josh michelle kevin carol brian amanda george melissa tim deborah
ravi priya wei mei ahmed fatima olu ngozi sven ingrid luca giulia hiro yuki
diego lucia omar leila kofi ama ivan olga
"""
_FIRST = tuple(_FIRST_TEXT.split())
_LAST_TEXT = """
smith johnson williams brown jones garcia miller davis rodriguez martinez
hernandez lopez gonzalez wilson anderson thomas taylor moore jackson martin lee
perez thompson white harris sanchez clark ramirez lewis robinson walker young
allen king wright scott torres nguyen hill flores green adams nelson baker hall
rivera campbell mitchell carter roberts patel shah chen wang kumar okafor mensah
larsen rossi tanaka novak ivanova haddad
"""
_LAST = tuple(_LAST_TEXT.split())

# department -> (share, titles, role, primary projects)
_DEPARTMENTS: dict[str, tuple[float, tuple[str, ...], str, tuple[str, ...]]] = {
    "Engineering": (
        0.55,
        (
            "Software Engineer",
            "Senior Software Engineer",
            "Staff Engineer",
            "Engineering Manager",
        ),
        "developer",
        ("PLAT", "WEB", "MOB", "PAY", "API"),
    ),
    "Data Science": (
        0.10,
        ("Data Scientist", "Data Engineer", "Analytics Manager"),
        "data",
        ("DATA", "ML", "PHI"),
    ),
    "Clinical Informatics": (
        0.07,
        ("Clinical Analyst", "Informatics Engineer"),
        "data",
        ("PHI", "DATA"),
    ),
    "Site Reliability": (
        0.08,
        ("SRE", "Senior SRE", "Platform Lead"),
        "developer",
        ("INFRA", "PLAT"),
    ),
    "Security": (
        0.04,
        ("Security Engineer", "Security Analyst"),
        "developer",
        ("SEC", "INFRA"),
    ),
    "IT": (0.04, ("Systems Administrator", "IT Manager"), "admin", ("INFRA",)),
    "Product": (0.07, ("Product Manager", "Designer"), "viewer", ("WEB", "MOB")),
    "QA": (
        0.05,
        ("QA Engineer", "Test Automation Engineer"),
        "developer",
        ("WEB", "MOB", "API"),
    ),
}

_PROJECTS = (
    (
        "PLAT",
        "Platform",
        (
            "core-services",
            "service-mesh",
            "auth-service",
            "config",
            "event-bus",
            "scheduler",
            "notifications",
        ),
        (),
        "internal",
    ),
    (
        "WEB",
        "Web",
        (
            "portal",
            "design-system",
            "patient-portal-ui",
            "marketing-site",
            "admin-console",
            "docs",
        ),
        (),
        "internal",
    ),
    (
        "MOB",
        "Mobile",
        ("ios-app", "android-app", "mobile-sdk", "push-gateway"),
        (),
        "internal",
    ),
    (
        "API",
        "Public API",
        ("api-gateway", "api-specs", "sdk-python", "sdk-java", "webhooks"),
        (),
        "internal",
    ),
    (
        "PAY",
        "Payments",
        ("ledger", "payment-gateway", "billing", "invoicing", "fraud-rules"),
        ("crown-jewel", "pci"),
        "restricted",
    ),
    (
        "PHI",
        "Patient Health Records",
        (
            "ehr-gateway",
            "fhir-adapter",
            "phi-etl",
            "consent-service",
            "lab-results",
            "imaging",
        ),
        ("phi",),
        "restricted",
    ),
    (
        "DATA",
        "Data Platform",
        ("warehouse", "dbt-models", "airflow-dags", "ingest", "reporting"),
        ("phi",),
        "confidential",
    ),
    (
        "ML",
        "Machine Learning",
        ("risk-model", "feature-store", "notebooks", "training-pipelines"),
        (),
        "confidential",
    ),
    (
        "INFRA",
        "Infrastructure",
        (
            "terraform-live",
            "terraform-modules",
            "ansible",
            "k8s-manifests",
            "signing-keys",
            "ci-images",
        ),
        ("crown-jewel",),
        "restricted",
    ),
    (
        "SEC",
        "Security Tools",
        ("detections", "scanners", "incident-playbooks"),
        (),
        "confidential",
    ),
)


def make_projects() -> list[Project]:
    """The fixed project and repository catalogue (55 repositories)."""
    projects = []
    for index, (key, name, repos, tags, sensitivity) in enumerate(_PROJECTS, start=1):
        projects.append(
            Project(
                key=key,
                id=str(index),
                name=name,
                repos=repos,
                tags=tags,
                sensitivity=sensitivity,
            )
        )
    return projects


def make_people(seed: int, count: int) -> list[Person]:
    """``count`` people plus the service accounts, deterministic for ``seed``.

    About 3% are terminated and 2% suspended; terminated people do nothing in
    normal activity (the departed-identity story makes one of them act).
    """
    rng = random.Random(f"{seed}:people")
    people: list[Person] = []
    taken: set[str] = set()
    managers: dict[str, str] = {}
    departments = list(_DEPARTMENTS)
    weights = [_DEPARTMENTS[d][0] for d in departments]

    for index in range(max(count, 12)):
        # The first few are fixed so every department and the admins exist.
        department = (
            departments[index % len(departments)]
            if index < 16
            else rng.choices(departments, weights)[0]
        )
        people.append(_person(rng, index, department, taken, managers))

    if not any(p.status == "terminated" for p in people):
        people[-1] = replace(people[-1], status="terminated")
    people.extend(_service_accounts(len(people)))
    return people


def _person(
    rng: random.Random,
    index: int,
    department: str,
    taken: set[str],
    managers: dict[str, str],
) -> Person:
    _share, titles, role, projects = _DEPARTMENTS[department]
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    username = f"{first}.{last}"
    suffix = 2
    while username in taken:
        username = f"{first}.{last}{suffix}"
        suffix += 1
    taken.add(username)

    is_manager = department not in managers
    title = titles[-1] if is_manager else rng.choice(titles[:-1] or titles)
    manager = "cto.office" if is_manager else managers[department]
    if is_manager:
        managers[department] = username

    status = "active"
    draw = rng.random()
    if index >= 16 and draw < 0.03:
        status = "terminated"
    elif index >= 16 and draw < 0.05:
        status = "suspended"

    groups = ["stash-users"]
    if role in {"developer", "data"}:
        groups.append("developers")
    if department in {"Clinical Informatics", "Data Science"}:
        groups.append("phi-access")
    if role == "admin":
        groups.append("bitbucket-admins")
    if department == "Security":
        groups.append("security-team")
    if is_manager and role != "admin":
        groups.append("project-admins")

    office = "london" if rng.random() < 0.3 else "boston"
    lan, vpn, egress, home = (
        (20, 201, "81.2.69", "203.0.113")
        if office == "london"
        else (10, 200, "216.160.83", "198.51.100")
    )
    user_projects = tuple(rng.sample(projects, k=min(len(projects), rng.randint(1, 3))))
    return Person(
        user_id=str(index + 10),
        username=username,
        email=f"{username}@example-health.test",
        display_name=f"{first.title()} {last.title()}",
        department=department,
        title=title,
        manager=manager,
        status=status,
        mfa_enrolled=rng.random() < 0.92,
        groups=tuple(groups),
        office=office,
        lan_ip=f"10.{lan}.{rng.randint(1, 250)}.{rng.randint(2, 250)}",
        vpn_ip=f"10.{vpn}.{rng.randint(1, 250)}.{rng.randint(2, 250)}",
        home_ip=f"{home}.{rng.randint(2, 250)}",
        egress_ip=f"{egress}.{rng.randint(2, 30)}",
        cloud_id=f"712020:{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        role=role,
        projects=user_projects,
    )


def _service_accounts(first_index: int) -> list[Person]:
    def service(
        offset: int,
        username: str,
        title: str,
        ip: str,
        groups: tuple[str, ...],
        projects: tuple[str, ...],
    ) -> Person:
        return Person(
            user_id=str(first_index + 10 + offset),
            username=username,
            email=f"{username}@example-health.test",
            display_name=username,
            department="Site Reliability",
            title=title,
            manager="cto.office",
            status="active",
            mfa_enrolled=False,
            groups=groups,
            office="boston",
            lan_ip=ip,
            vpn_ip=ip,
            home_ip=ip,
            egress_ip="216.160.83.2",
            cloud_id=f"712020:00000000-0000-4000-8000-{first_index + offset:012d}",
            role="service",
            projects=projects,
            human=False,
        )

    return [
        service(
            0,
            "svc-jenkins",
            "CI service account",
            "10.50.3.21",
            ("stash-users", "ci-bots"),
            ("PLAT", "WEB", "API", "MOB", "PAY"),
        ),
        service(
            1,
            "svc-renovate",
            "Dependency bot",
            "10.50.3.40",
            ("stash-users", "ci-bots"),
            ("PLAT", "WEB", "API"),
        ),
        service(
            2,
            COLLECTOR_ACCOUNT,
            "Audit collector",
            "10.50.9.9",
            ("stash-users", "bitbucket-admins"),
            (),
        ),
    ]

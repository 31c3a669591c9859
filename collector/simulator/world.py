"""The simulated organisation and everything it did: ``build_world``.

A world is deterministic for (seed, users, days, end). With ``end=None`` it ends
at the current minute, so its content shifts with the clock but keeps its shape.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.simulator.records import CloudEvent, DcEvent, GitOp, WebRequest

NODE_ID = "8767044c-1b98-4d64-82db-ef29af8c3792"
ORG_ID = "5a1e2b3c-0d4f-4a6b-8c9d-0e1f2a3b4c5d"
INSTANCE = "dc-sim"
COLLECTOR_ACCOUNT = "svc-bbaudit"


@dataclass(frozen=True, slots=True)
class NetworkSite:
    """One network the simulated people connect from, with its geo and ASN."""

    cidr: str
    zone: str
    country_iso: str
    country_name: str
    city: str
    latitude: float
    longitude: float
    asn: int
    as_org: str


# Documentation ranges (RFC 5737, RFC 2544, RFC 6598) plus a few public-looking
# ranges that MaxMind's own test databases use; all are data, never contacted.
# ASNs are from the documentation block (RFC 5398).
NETWORKS: tuple[NetworkSite, ...] = (
    NetworkSite(
        "10.10.0.0/16",
        "office",
        "US",
        "United States",
        "Boston",
        42.3601,
        -71.0589,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "10.20.0.0/16",
        "office",
        "GB",
        "United Kingdom",
        "London",
        51.5074,
        -0.1278,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "216.160.83.0/24",
        "office",
        "US",
        "United States",
        "Boston",
        42.3601,
        -71.0589,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "81.2.69.0/24",
        "office",
        "GB",
        "United Kingdom",
        "London",
        51.5074,
        -0.1278,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "10.200.0.0/16",
        "vpn",
        "US",
        "United States",
        "Boston",
        42.3601,
        -71.0589,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "10.201.0.0/16",
        "vpn",
        "GB",
        "United Kingdom",
        "London",
        51.5074,
        -0.1278,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "10.50.0.0/16",
        "ci-runners",
        "US",
        "United States",
        "Ashburn",
        39.0438,
        -77.4874,
        64496,
        "Example Health Corp",
    ),
    NetworkSite(
        "198.51.100.0/24",
        "home",
        "US",
        "United States",
        "Worcester",
        42.2626,
        -71.8023,
        64497,
        "Example Cable US",
    ),
    NetworkSite(
        "203.0.113.0/24",
        "home",
        "GB",
        "United Kingdom",
        "Manchester",
        53.4808,
        -2.2426,
        64498,
        "Example Broadband UK",
    ),
    NetworkSite(
        "67.43.156.0/24",
        "hosting",
        "SG",
        "Singapore",
        "Singapore",
        1.3521,
        103.8198,
        64500,
        "Example Cloud Hosting Pte",
    ),
    NetworkSite(
        "192.0.2.0/24",
        "hosting",
        "NL",
        "Netherlands",
        "Amsterdam",
        52.3676,
        4.9041,
        64504,
        "Example Colocation BV",
    ),
    NetworkSite(
        "175.16.199.0/24",
        "hosting",
        "CN",
        "China",
        "Changchun",
        43.8800,
        125.3228,
        64501,
        "Example Data Center Co",
    ),
    NetworkSite(
        "89.160.20.0/24",
        "attacker",
        "SE",
        "Sweden",
        "Linkoping",
        58.4109,
        15.6216,
        64502,
        "Example Bulletproof AB",
    ),
    NetworkSite(
        "198.18.0.0/24",
        "hosting",
        "DE",
        "Germany",
        "Frankfurt",
        50.1109,
        8.6821,
        64503,
        "Example VPS GmbH",
    ),
)


@dataclass(frozen=True, slots=True)
class Person:
    """One directory entry and how the person behaves."""

    user_id: str
    username: str
    email: str
    display_name: str
    department: str
    title: str
    manager: str
    status: str
    mfa_enrolled: bool
    groups: tuple[str, ...]
    office: str
    lan_ip: str
    vpn_ip: str
    home_ip: str
    egress_ip: str
    cloud_id: str
    role: str
    projects: tuple[str, ...]
    human: bool = True

    def directory_row(self) -> dict[str, Any]:
        """The directory-export row (see ``World.directory_rows``)."""
        return {
            "username": self.username,
            "email": self.email,
            "display_name": self.display_name,
            "department": self.department,
            "title": self.title,
            "manager": self.manager,
            "status": self.status,
            "mfa_enrolled": self.mfa_enrolled,
            "groups": list(self.groups),
            "human": self.human,
        }


@dataclass(frozen=True, slots=True)
class Project:
    """A Bitbucket project with its repositories and sensitivity."""

    key: str
    id: str
    name: str
    repos: tuple[str, ...]
    tags: tuple[str, ...] = ()
    sensitivity: str = "internal"


@dataclass(frozen=True, slots=True)
class StoryInfo:
    """An injected attack story and the rules it should raise."""

    name: str
    rule_ids: tuple[str, ...]
    actor: str
    description: str
    start: datetime
    end: datetime
    source_ip: str | None = None


@dataclass(slots=True)
class World:
    """Everything a simulated Bitbucket instance and organisation recorded.

    ``dc_events`` are sorted oldest first by (``epoch_ms``, ``seq``);
    ``cloud_events`` by (``processed_ms``, ``seq``).
    """

    seed: int
    start: datetime
    end: datetime
    people: list[Person]
    projects: list[Project]
    networks: list[NetworkSite]
    dc_events: list[DcEvent] = field(default_factory=list)
    git_ops: list[GitOp] = field(default_factory=list)
    web_requests: list[WebRequest] = field(default_factory=list)
    cloud_events: list[CloudEvent] = field(default_factory=list)
    stories: list[StoryInfo] = field(default_factory=list)
    org_id: str = ORG_ID
    instance: str = INSTANCE
    node: str = NODE_ID

    def person(self, username: str) -> Person:
        """The person with this username; ``KeyError`` if none."""
        for candidate in self.people:
            if candidate.username == username:
                return candidate
        raise KeyError(username)

    def directory_rows(self) -> list[dict[str, Any]]:
        """Rows of a directory export, one per person, sorted by username."""
        rows = [p.directory_row() for p in self.people]
        return sorted(rows, key=lambda r: str(r["username"]))

    def write_directory_csv(self, path: Path) -> None:
        """Write the directory as CSV; ``groups`` joined by ``;``, booleans as text."""
        columns = [
            "username",
            "email",
            "display_name",
            "department",
            "title",
            "manager",
            "status",
            "mfa_enrolled",
            "groups",
            "human",
        ]
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in self.directory_rows():
                flat = dict(row)
                flat["groups"] = ";".join(row["groups"])
                flat["mfa_enrolled"] = "true" if row["mfa_enrolled"] else "false"
                flat["human"] = "true" if row["human"] else "false"
                writer.writerow(flat)

    def write_directory_jsonl(self, path: Path) -> None:
        """Write the directory as JSON lines, one object per person."""
        with path.open("w", encoding="utf-8") as handle:
            for row in self.directory_rows():
                handle.write(json.dumps(row, sort_keys=True) + "\n")

    def repo_tags(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Suggested repository tags: ``{"projects": {KEY: ...}, "repositories":
        {"KEY/slug": ...}}``, each value ``{"tags": [...], "sensitivity": str}``."""
        projects: dict[str, dict[str, Any]] = {}
        repositories: dict[str, dict[str, Any]] = {}
        for project in self.projects:
            projects[project.key] = {
                "tags": list(project.tags),
                "sensitivity": project.sensitivity,
            }
            for repo in project.repos:
                tags = list(project.tags)
                if repo in _CROWN_JEWEL_REPOS and "crown-jewel" not in tags:
                    tags.append("crown-jewel")
                repositories[f"{project.key}/{repo}"] = {
                    "tags": tags,
                    "sensitivity": "restricted" if tags else project.sensitivity,
                }
        return {"projects": projects, "repositories": repositories}

    def story(self, name: str) -> StoryInfo:
        """The story with this name; ``KeyError`` if none."""
        for info in self.stories:
            if info.name == name:
                return info
        raise KeyError(name)

    def expected_dc_ids(self, instance: str | None = None) -> set[str]:
        """Content-hash ids (``collector.ids.dc_event_id``) of every DC event."""
        from collector.simulator.dc_api import dc_ids

        return dc_ids(self.dc_events, instance or self.instance)

    def write_files(self, home: Path, **options: Any) -> dict[str, list[Path]]:
        """Write the audit and access log files under ``home``; see ``files.py``."""
        from collector.simulator.files import write_files

        return write_files(self, home, **options)


_CROWN_JEWEL_REPOS = {"ledger", "payment-gateway", "terraform-live", "signing-keys"}


def build_world(
    seed: int = 7,
    *,
    users: int = 300,
    days: float = 2.0,
    end: datetime | None = None,
    stories: bool = True,
) -> World:
    """Generate a world: people, projects, normal activity and attack stories.

    The stories sit in the last hours of the range so that first-seen
    baselines have ``days`` minus a few hours of history behind them.
    """
    from collector.simulator import activity, population
    from collector.simulator import stories as story_mod

    if end is None:
        end = datetime.now(UTC).replace(second=0, microsecond=0)
    end = end.astimezone(UTC)
    start = end - timedelta(days=days)

    people = population.make_people(seed, users)
    projects = population.make_projects()
    world = World(
        seed=seed,
        start=start,
        end=end,
        people=people,
        projects=projects,
        networks=list(NETWORKS),
    )
    activity.generate(world)
    if stories:
        story_mod.inject_all(world)
    activity.finalize(world)
    return world

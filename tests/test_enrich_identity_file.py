"""The directory-file identity enricher: matching, non-human authors, reload."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.model import Actor, ActorKind, AuditEvent
from enrichers.directory_file import (
    DirectoryFileError,
    IdentityFileEnricher,
    IdentityFileSettings,
    load_directory,
)

CSV_HEADER = (
    "username,email,display_name,department,title,manager,status,mfa_enrolled,groups"
)
CSV_BODY = (
    f"{CSV_HEADER}\n"
    "alice,Alice@Example.com,Alice Johnson,Research,Engineer,carol,active,true,"
    "dev;phi\n"
    "bob,bob@example.com,Bob Li,Finance,Analyst,carol,terminated,no,finance|all\n"
)


def event(
    name: str | None, email: str | None = None, kind: ActorKind = "human"
) -> AuditEvent:
    """An audit event by one author."""
    return AuditEvent(
        id="e1",
        time=datetime(2026, 5, 1, tzinfo=UTC),
        platform="dc",
        instance="bb",
        source_kind="test",
        action="repo.cloned",
        category="repository",
        actor=Actor(name=name, email=email, kind=kind),
    )


async def started(path: Path, metrics: Metrics) -> IdentityFileEnricher:
    """An enricher over ``path`` without a background watcher."""
    settings = IdentityFileSettings(name="hr", path=path, reload_interval=0)
    enricher = IdentityFileEnricher(settings, metrics)
    await enricher.start()
    return enricher


async def test_csv_matches_username_case_insensitively(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A CSV row matches its author by username whatever the case."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    enricher = await started(path, metrics)
    ev = event("ALICE")

    await enricher.enrich([ev])

    identity = ev.context["identity"]
    assert identity["matched_by"] == "username"
    assert identity["directory"] == "hr"
    assert identity["display_name"] == "Alice Johnson"
    assert identity["mfa_enrolled"] is True
    assert identity["groups"] == ["dev", "phi"]
    assert identity["human"] is True


async def test_email_match_when_username_unknown(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A Cloud author named by display name matches by email instead."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    enricher = await started(path, metrics)
    ev = event("Bob Li", "BOB@example.com")

    await enricher.enrich([ev])

    assert ev.context["identity"]["matched_by"] == "email"
    assert ev.context["identity"]["status"] == "terminated"
    assert ev.context["identity"]["groups"] == ["finance", "all"]


async def test_jsonl_directory(tmp_path: Path, metrics: Metrics) -> None:
    """A JSON-lines export with list groups loads like the CSV."""
    path = tmp_path / "users.jsonl"
    path.write_text(
        '{"username": "dana", "email": "dana@example.com", "status": "suspended",'
        ' "mfa_enrolled": false, "groups": ["ops"]}\n\n'
    )
    enricher = await started(path, metrics)
    ev = event("dana")

    await enricher.enrich([ev])

    assert ev.context["identity"]["status"] == "suspended"
    assert ev.context["identity"]["mfa_enrolled"] is False
    assert ev.context["identity"]["groups"] == ["ops"]


@pytest.mark.parametrize("kind", ["system", "anonymous", "bot"])
async def test_non_human_authors_are_not_looked_up(
    tmp_path: Path, metrics: Metrics, kind: ActorKind
) -> None:
    """System, anonymous and access-token authors are marked non-human."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    enricher = await started(path, metrics)
    ev = event("alice", kind=kind)

    await enricher.enrich([ev])

    assert ev.context["identity"] == {"human": False, "matched_by": None}


async def test_unmatched_user_is_recorded(tmp_path: Path, metrics: Metrics) -> None:
    """An author no directory knows keeps a human identity with no match."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    enricher = await started(path, metrics)
    ev = event("mallory", "mallory@evil.example")

    await enricher.enrich([ev])

    assert ev.context["identity"] == {
        "human": True,
        "matched_by": None,
        "username": "mallory",
        "email": "mallory@evil.example",
    }
    assert "enrichment_errors" not in ev.context


async def test_first_directory_match_wins(tmp_path: Path, metrics: Metrics) -> None:
    """A second directory leaves an earlier match alone and fills a miss."""
    first = tmp_path / "a.csv"
    first.write_text(f"{CSV_HEADER}\nalice,,From A,,,,active,,\n")
    second = tmp_path / "b.csv"
    second.write_text(f"{CSV_HEADER}\nalice,,From B,,,,,,\nerin,,Erin,,,,,,\n")
    a = await started(first, metrics)
    b = IdentityFileEnricher(
        IdentityFileSettings(name="b", path=second, reload_interval=0), metrics
    )
    await b.start()
    alice, erin = event("alice"), event("erin")

    for enricher in (a, b):
        await enricher.enrich([alice, erin])

    assert alice.context["identity"]["display_name"] == "From A"
    assert erin.context["identity"]["directory"] == "b"


async def test_reload_on_file_change(tmp_path: Path, metrics: Metrics) -> None:
    """A changed file is picked up without a restart."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    enricher = await started(path, metrics)
    replacement = tmp_path / "new.csv"
    replacement.write_text(f"{CSV_HEADER}\nfrank,,Frank,,,,active,,\n")
    os.replace(replacement, path)

    reloaded = await enricher.check_reload()
    ev = event("frank")
    await enricher.enrich([ev])

    assert reloaded is True
    assert ev.context["identity"]["matched_by"] == "username"
    assert await enricher.check_reload() is False


async def test_background_watcher_reloads(tmp_path: Path, metrics: Metrics) -> None:
    """The watcher task notices a change within its interval."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    settings = IdentityFileSettings(path=path, reload_interval=0.05)
    enricher = IdentityFileEnricher(settings, metrics)
    await enricher.start()
    path.write_text(f"{CSV_HEADER}\nzoe,,Zoe,,,,active,,\n")

    for _ in range(100):
        if enricher.directory and "zoe" in enricher.directory.by_username:
            break
        await asyncio.sleep(0.02)
    await enricher.aclose()

    assert enricher.directory is not None
    assert "zoe" in enricher.directory.by_username


async def test_broken_new_file_keeps_old_data(tmp_path: Path, metrics: Metrics) -> None:
    """A bad line in a new version is logged with file and line; old data stays."""
    path = tmp_path / "users.csv"
    path.write_text(CSV_BODY)
    enricher = await started(path, metrics)
    path.write_text(f"{CSV_BODY}carl,,Carl,,,,retired,,\n")

    with capture_logs() as logs:
        reloaded = await enricher.check_reload()
    ev = event("alice")
    await enricher.enrich([ev])

    assert reloaded is False
    assert ev.context["identity"]["matched_by"] == "username"
    failure = next(log for log in logs if log["event"] == "directory.load_failed")
    assert failure["line"] == 4
    assert failure["path"] == str(path)
    assert failure["kept_previous"] is True


async def test_missing_file_marks_events(tmp_path: Path, metrics: Metrics) -> None:
    """With no directory loaded, events are marked and still flow."""
    enricher = await started(tmp_path / "absent.csv", metrics)
    ev = event("alice")

    await enricher.enrich([ev])

    assert ev.context["enrichment_errors"] == ["hr: directory file not loaded"]


def test_duplicate_username_names_the_line(tmp_path: Path) -> None:
    """A username listed twice is an error naming the second line."""
    path = tmp_path / "users.csv"
    path.write_text(f"{CSV_HEADER}\nann,,,,,,,,\nANN,,,,,,,,\n")

    with pytest.raises(DirectoryFileError, match=r"users\.csv:3: duplicate"):
        load_directory(path)


def test_shared_email_matches_nobody(tmp_path: Path) -> None:
    """An email two users share is not used for matching."""
    path = tmp_path / "users.jsonl"
    path.write_text(
        '{"username": "a", "email": "team@x.io"}\n'
        '{"username": "b", "email": "team@x.io"}\n'
    )

    directory = load_directory(path)

    assert "team@x.io" not in directory.by_email


def test_unicode_line_separator_inside_a_value_is_kept(tmp_path: Path) -> None:
    """U+2028 inside a JSON string is data, not a line break."""
    path = tmp_path / "users.jsonl"
    line = '{"username": "ana", "display_name": "Ana\u2028Lopez", "email": "a@x"}'
    path.write_text(line + "\n", encoding="utf-8")

    directory = load_directory(path)

    assert directory.by_username["ana"].display_name == "Ana\u2028Lopez"


def test_overlong_csv_field_is_a_clear_error(tmp_path: Path) -> None:
    """A field beyond the csv module's limit names the file, not a bare csv.Error."""
    path = tmp_path / "users.csv"
    path.write_text("username,title\nbob," + "x" * 200_000 + "\n", encoding="utf-8")

    with pytest.raises(DirectoryFileError, match="unreadable CSV"):
        load_directory(path)

"""Identity from a directory export file (CSV or JSON lines), reloaded on change.

Columns (CSV header) or keys (JSON lines): ``username, email, display_name,
department, title, manager, status, mfa_enrolled, groups``; only ``username``
is required. ``groups`` is a list (JSON) or a string split on ``;`` or ``|``.
Usernames and emails match case-insensitively.

The file is checked for a change (inode, size, mtime) every ``reload_interval``
by a background task; a changed file is parsed off the event loop and swapped in
whole. A new version with any bad line is rejected and the old data stays: a
half-loaded directory would make a terminated user look unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.plugins import ENRICHERS, Runtime
from collector.settings_types import Duration, PluginSettings
from enrichers.context import mark_errors
from enrichers.identity import (
    IDENTITY_KEY,
    NON_HUMAN_KINDS,
    DirectoryUser,
    LookupKeys,
    MatchedBy,
    needs_lookup,
    parse_bool,
    parse_status,
    record_match,
    record_unmatched,
)

logger = structlog.get_logger(__name__)

_MAX_REMEMBERED_AUTHORS = 200_000

_COLUMNS = (
    "username",
    "email",
    "display_name",
    "department",
    "title",
    "manager",
    "status",
    "mfa_enrolled",
    "groups",
)
_MAX_FILE_BYTES = 256 * 1024 * 1024


class IdentityFileSettings(PluginSettings):
    """``kind: identity_file``."""

    kind: Literal["identity_file"] = "identity_file"
    path: Path
    format: Literal["auto", "csv", "jsonl"] = "auto"
    reload_interval: Duration = 10.0


class DirectoryFileError(ValueError):
    """A directory file could not be used; ``path`` and ``line`` say where."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class Directory:
    """One loaded version of the file: users by lower-cased username and email."""

    by_username: Mapping[str, DirectoryUser]
    by_email: Mapping[str, DirectoryUser]
    stamp: tuple[int, int, int]

    def find(self, keys: LookupKeys) -> tuple[DirectoryUser, MatchedBy] | None:
        """The user and how it matched (``username`` first, then ``email``)."""
        if keys.username is not None:
            user = self.by_username.get(keys.username)
            if user is not None:
                return user, "username"
        if keys.email is not None:
            user = self.by_email.get(keys.email)
            if user is not None:
                return user, "email"
        return None


def file_stamp(path: Path) -> tuple[int, int, int]:
    """What tells one version of a file from the next: inode, size, mtime."""
    info = os.stat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns


def load_directory(path: Path, fmt: str = "auto") -> Directory:
    """Parse the whole file; raises ``DirectoryFileError`` naming the bad line."""
    try:
        stamp = file_stamp(path)
        if stamp[1] > _MAX_FILE_BYTES:
            raise DirectoryFileError(path, 0, "file is larger than 256 MiB")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DirectoryFileError(path, 0, f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DirectoryFileError(path, 0, f"not UTF-8 at byte {exc.start}") from exc

    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv"
    rows = _jsonl_rows(path, text) if fmt == "jsonl" else _csv_rows(path, text)

    by_username: dict[str, DirectoryUser] = {}
    by_email: dict[str, DirectoryUser] = {}
    ambiguous: set[str] = set()
    for line, row in _checked(path, rows):
        user = _user(path, line, row)
        key = user.username.lower()
        if key in by_username:
            message = f"duplicate username {user.username!r}"
            raise DirectoryFileError(path, line, message)
        by_username[key] = user
        if user.email:
            _index_email(by_email, ambiguous, user)

    return Directory(by_username, by_email, stamp)


def _checked(
    path: Path, rows: Iterator[tuple[int, Mapping[str, Any]]]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The rows, with the csv module's own errors (an over-long field, a NUL)
    turned into a ``DirectoryFileError`` that names the file."""
    line = 0
    try:
        for line, row in rows:
            yield line, row
    except csv.Error as exc:
        raise DirectoryFileError(path, line + 1, f"unreadable CSV: {exc}") from exc


def _index_email(
    by_email: dict[str, DirectoryUser], ambiguous: set[str], user: DirectoryUser
) -> None:
    # A shared mailbox cannot identify one person: such emails match nobody.
    email = (user.email or "").lower()
    if email in ambiguous:
        return
    if email in by_email:
        del by_email[email]
        ambiguous.add(email)
        return
    by_email[email] = user


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in reader.fieldnames or []]
    if "username" not in header:
        raise DirectoryFileError(path, 1, "the CSV header has no 'username' column")
    reader.fieldnames = header
    for row in reader:
        if None in row:
            raise DirectoryFileError(path, reader.line_num, "more fields than header")
        yield reader.line_num, row


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON
    # strings (a display name) and must not cut a record in two.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DirectoryFileError(path, line, "not valid JSON") from exc
        if not isinstance(row, dict):
            raise DirectoryFileError(path, line, "expected a JSON object")
        yield line, row


def _user(path: Path, line: int, row: Mapping[str, Any]) -> DirectoryUser:
    def text(key: str) -> str | None:
        value = row.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise DirectoryFileError(path, line, f"{key} must be a string")
        return value.strip() or None

    username = text("username")
    if username is None:
        raise DirectoryFileError(path, line, "username is empty")
    try:
        return DirectoryUser(
            username=username,
            email=text("email"),
            display_name=text("display_name"),
            department=text("department"),
            title=text("title"),
            manager=text("manager"),
            status=parse_status(row.get("status")),
            mfa_enrolled=parse_bool(row.get("mfa_enrolled")),
            groups=_groups(row.get("groups")),
            # Service accounts are listed in most exports; an optional "human"
            # column (true/false) says which rows are not people.
            human=parse_bool(row.get("human")) is not False,
        )
    except ValueError as exc:
        if isinstance(exc, DirectoryFileError):
            raise
        raise DirectoryFileError(path, line, str(exc)) from exc


def _groups(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, list):
        return tuple(str(item).strip() for item in value if str(item).strip())
    if isinstance(value, str):
        parts = value.replace("|", ";").split(";")
        return tuple(part.strip() for part in parts if part.strip())
    raise ValueError("groups must be a list or a ';'-separated string")


class IdentityFileEnricher:
    """Adds ``context["identity"]`` from a directory export file."""

    def __init__(self, settings: IdentityFileSettings, metrics: Metrics) -> None:
        self.name = settings.name or "identity_file"
        self.settings = settings
        self.directory: Directory | None = None
        self._matches: dict[tuple[str | None, str | None], dict[str, Any]] = {}
        self._matches_for: Directory | None = None
        self._task: asyncio.Task[None] | None = None
        self._errors = metrics.enrichment_errors
        self._reloads = metrics.counter(
            "bbaudit_directory_reloads_total",
            "Directory file loads, by enricher and result.",
            ["enricher", "result"],
        )

    async def start(self) -> None:
        """Start watching the file, then load it (a failure is logged and the
        watcher keeps trying, so fixing the file needs no restart)."""
        if self._task is None and self.settings.reload_interval > 0:
            self._task = asyncio.create_task(self._watch(), name=f"{self.name}-watch")
        await self.check_reload()

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Match each event's author; no I/O here.

        A match depends only on the author's name and email and the loaded
        file, so it is remembered per author until the next reload: the usual
        event costs one dict lookup. Events another directory already handled
        take the general path.
        """
        directory = self.directory
        if directory is None:
            self._enrich_slowly(events, directory)
            return
        if directory is not self._matches_for:
            self._matches.clear()
            self._matches_for = directory
        matches = self._matches
        rest: list[AuditEvent] = []
        for event in events:
            actor = event.actor
            context = event.context
            if IDENTITY_KEY in context or actor.kind in NON_HUMAN_KINDS:
                rest.append(event)
                continue
            value = matches.get((actor.name, actor.email))
            if value is None:
                rest.append(event)
            else:
                context[IDENTITY_KEY] = value
        if rest:
            self._enrich_slowly(rest, directory)

    def _enrich_slowly(
        self, events: Sequence[AuditEvent], directory: Directory | None
    ) -> None:
        unloaded: list[AuditEvent] = []
        for event in events:
            keys = needs_lookup(event)
            if keys is None:
                continue
            if directory is None:
                unloaded.append(event)
                continue
            found = directory.find(keys)
            if found is None:
                record_unmatched(event)
            else:
                record_match(event, found[0], found[1], self.name)
                self._remember(event)

        if unloaded:
            mark_errors(unloaded, self.name, "directory file not loaded")
            self._errors.labels(enricher=self.name).inc()

    def _remember(self, event: AuditEvent) -> None:
        if len(self._matches) >= _MAX_REMEMBERED_AUTHORS:
            self._matches.clear()
        actor = event.actor
        self._matches[(actor.name, actor.email)] = event.context[IDENTITY_KEY]

    async def aclose(self) -> None:
        """Stop watching the file. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check_reload(self) -> bool:
        """Reload when the file changed; return whether new data was swapped in."""
        path = self.settings.path
        try:
            stamp = await asyncio.to_thread(file_stamp, path)
        except OSError as exc:
            if self.directory is None:
                self._log_failure(DirectoryFileError(path, 0, str(exc.strerror)))
            return False
        if self.directory is not None and self.directory.stamp == stamp:
            return False

        try:
            loaded = await asyncio.to_thread(load_directory, path, self.settings.format)
        except DirectoryFileError as exc:
            self._log_failure(exc)
            return False

        self.directory = loaded
        self._reloads.labels(enricher=self.name, result="loaded").inc()
        logger.info(
            "directory.loaded",
            enricher=self.name,
            path=str(path),
            users=len(loaded.by_username),
        )
        return True

    def _log_failure(self, exc: DirectoryFileError) -> None:
        # Keep the last good data; a broken export must not blank the directory.
        self._reloads.labels(enricher=self.name, result="rejected").inc()
        logger.error(
            "directory.load_failed",
            enricher=self.name,
            path=str(exc.path),
            line=exc.line,
            error=str(exc),
            kept_previous=self.directory is not None,
        )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await self.check_reload()
            except Exception:  # the watcher must outlive any one bad reload
                logger.exception("directory.watch_failed", enricher=self.name)


def _build(settings: IdentityFileSettings, runtime: Runtime) -> IdentityFileEnricher:
    return IdentityFileEnricher(settings, runtime.metrics)


ENRICHERS.register(
    "identity_file",
    IdentityFileSettings,
    _build,
    "identity from a CSV or JSON-lines directory export, reloaded on change",
)

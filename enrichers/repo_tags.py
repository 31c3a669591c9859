"""Repository tags and sensitivity from project/repository patterns in the config.

The repository of an event comes from its REPOSITORY target (``PROJECT/repo``
or a bare slug beside a PROJECT target), else from a PROJECT target alone, else
from the ``details.project`` / ``details.repository`` attributes. Patterns are
shell globs, matched case-insensitively. Every matching rule adds its tags; the
sensitivity is the highest one any matching rule names, by ``sensitivity_order``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, model_validator

from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.plugins import ENRICHERS, Runtime
from collector.settings_types import PluginSettings, StrictModel

REPO_KEY = "repo"
DEFAULT_SENSITIVITY_ORDER = ["public", "internal", "confidential", "restricted"]


class RepoRule(StrictModel):
    """Tags for the repositories matching ``project`` and ``repository`` globs."""

    project: str = "*"
    repository: str = "*"
    tags: list[str] = Field(default_factory=list)
    sensitivity: str | None = None


class RepoTagsSettings(PluginSettings):
    """``kind: repo_tags``."""

    kind: Literal["repo_tags"] = "repo_tags"
    rules: list[RepoRule] = Field(default_factory=list)
    sensitivity_order: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVITY_ORDER)
    )
    default_sensitivity: str | None = None

    @model_validator(mode="after")
    def _check_sensitivities(self) -> RepoTagsSettings:
        known = set(self.sensitivity_order)
        named = [rule.sensitivity for rule in self.rules] + [self.default_sensitivity]
        for value in named:
            if value is not None and value not in known:
                raise ValueError(
                    f"sensitivity {value!r} is not in sensitivity_order {sorted(known)}"
                )
        return self


@dataclass(frozen=True, slots=True)
class RepoRef:
    """Where an event happened: a project key and (maybe) a repository slug."""

    project: str | None
    repository: str | None


def repo_of(event: AuditEvent) -> RepoRef | None:
    """The repository (or project) an event is about, or ``None``."""
    project, repository = _names(event)
    return _ref(project, repository) if project or repository else None


def _names(event: AuditEvent) -> tuple[str | None, str | None]:
    """The first PROJECT and REPOSITORY names, else the details attributes."""
    project = repository = None
    for target in event.targets:
        if target.type == "REPOSITORY" and repository is None:
            repository = target.name
        elif target.type == "PROJECT" and project is None:
            project = target.name
    if project is None and repository is None and event.attributes:
        project = event.attributes.get("details.project")
        repository = event.attributes.get("details.repository")
    return project, repository


@lru_cache(maxsize=65536)
def _ref(project: str | None, repository: str | None) -> RepoRef:
    """Split ``PROJECT/repo``; the prefix wins over a separate project name."""
    if repository and "/" in repository:
        key, _, slug = repository.partition("/")
        return RepoRef(key or project, slug or None)
    return RepoRef(project, repository or None)


class RepoTagsEnricher:
    """Adds ``context["repo"]`` for events about a project or repository."""

    def __init__(self, settings: RepoTagsSettings, metrics: Metrics) -> None:
        self.name = settings.name or "repo_tags"
        self.settings = settings
        self._rank = {name: i for i, name in enumerate(settings.sensitivity_order)}
        self._rules = [
            (_glob(rule.project), _glob(rule.repository), rule)
            for rule in settings.rules
        ]
        self._lookup = lru_cache(maxsize=65536)(self._context_for)

    async def start(self) -> None:
        """Nothing to load: the rules come with the settings."""

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Tag each event's repository (cached per project and repository)."""
        lookup = self._lookup
        for event in events:
            project, repository = _names(event)
            if project or repository:
                ref = _ref(project, repository)
                # Shared per repository: context values are read-only once set.
                event.context[REPO_KEY] = lookup(ref.project, ref.repository)

    async def aclose(self) -> None:
        """Nothing to release."""

    def context_for(self, project: str | None, repository: str | None) -> Any:
        """The ``context["repo"]`` value for one project and repository."""
        return _copy(self._lookup(project, repository))

    def _context_for(
        self, project: str | None, repository: str | None
    ) -> dict[str, Any]:
        tags: list[str] = []
        sensitivity = self.settings.default_sensitivity
        for project_glob, repo_glob, rule in self._rules:
            if not _matches(project_glob, project) or not _matches(
                repo_glob, repository
            ):
                continue
            tags += [tag for tag in rule.tags if tag not in tags]
            sensitivity = self._higher(sensitivity, rule.sensitivity)

        return {
            "project": project,
            "repository": repository,
            "tags": tags,
            "sensitivity": sensitivity,
        }

    def _higher(self, current: str | None, new: str | None) -> str | None:
        if new is None:
            return current
        if current is None or self._rank[new] > self._rank[current]:
            return new
        return current


def _glob(pattern: str) -> re.Pattern[str] | None:
    """A compiled glob, or ``None`` for ``*`` (which also matches nothing known)."""
    if pattern == "*":
        return None
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


def _matches(pattern: re.Pattern[str] | None, value: str | None) -> bool:
    if pattern is None:
        return True
    return value is not None and pattern.match(value) is not None


def _copy(context: dict[str, Any]) -> dict[str, Any]:
    result = dict(context)
    result["tags"] = list(context["tags"])
    return result


def _build(settings: RepoTagsSettings, runtime: Runtime) -> RepoTagsEnricher:
    return RepoTagsEnricher(settings, runtime.metrics)


ENRICHERS.register(
    "repo_tags", RepoTagsSettings, _build, "tags and sensitivity of the repository"
)

"""Registries of the pluggable stages: sources, enrichers, sinks and the detector.

Each plugin module registers itself with its ``kind``, its settings model and a
factory; the config loader validates a config entry against the model of its
kind, and the app builds the stage with the factory. Packages register on
import: ``collector.app`` imports ``enrichers``, ``detections`` and ``sinks``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from collector.errors import DuplicatePluginError, UnknownPluginError
from collector.settings_types import StrictModel

if TYPE_CHECKING:
    from collector.metrics import Metrics
    from collector.stages import Detector, Enricher, Sink, Source
    from collector.state import StateStore

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a factory may use to build its stage."""

    state_dir: Path
    store: StateStore
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class Plugin(Generic[T]):
    """One registered kind: its settings model and how to build it."""

    kind: str
    settings: type[StrictModel]
    factory: Callable[[Any, Runtime], T]
    description: str = ""


class Registry(Generic[T]):
    """Kinds of one stage, by name."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._plugins: dict[str, Plugin[T]] = {}

    def register(
        self,
        kind: str,
        settings: type[StrictModel],
        factory: Callable[[Any, Runtime], T],
        description: str = "",
    ) -> None:
        """Add a kind; registering the same kind twice is an error."""
        if kind in self._plugins:
            raise DuplicatePluginError(f"{self.stage} kind {kind!r} registered twice")
        self._plugins[kind] = Plugin(kind, settings, factory, description)

    def get(self, kind: str, path: str) -> Plugin[T]:
        """The plugin of ``kind``, or ``UnknownPluginError`` naming the config path."""
        try:
            return self._plugins[kind]
        except KeyError:
            known = ", ".join(sorted(self._plugins)) or "none"
            raise UnknownPluginError(
                path, f"unknown {self.stage} kind {kind!r} (known: {known})"
            ) from None

    def kinds(self) -> list[str]:
        """Registered kinds, sorted."""
        return sorted(self._plugins)


SOURCES: Registry[Source] = Registry("source")
ENRICHERS: Registry[Enricher] = Registry("enricher")
SINKS: Registry[Sink] = Registry("sink")
DETECTORS: Registry[Detector] = Registry("detector")

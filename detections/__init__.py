"""Streaming detections: the engine, its rules, and SigmaHQ rules evaluated natively.

Importing this package registers the ``engine`` detector kind.
"""

from __future__ import annotations

from collector.plugins import DETECTORS
from detections.catalog import format_rules_table, rule_catalog
from detections.engine import DetectionEngine, create_engine
from detections.settings import EngineSettings, RuleSettings

DETECTORS.register(
    "engine",
    EngineSettings,
    create_engine,
    "built-in rules plus SigmaHQ rules, with persisted state",
)

__all__ = [
    "DetectionEngine",
    "EngineSettings",
    "RuleSettings",
    "create_engine",
    "format_rules_table",
    "rule_catalog",
]

"""Writes the configuration reference (docs/configuration.md) from the settings
models themselves, so the documentation cannot drift from the code.

Run ``python -m collector.config_reference > docs/configuration.md``; a test
fails when the committed file differs from what this prints.
"""

from __future__ import annotations

import re
import sys
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from collector.app import load_plugins
from collector.config import AppSettings, HttpSettings, LogSettings, PipelineSettings
from collector.plugins import DETECTORS, ENRICHERS, SINKS, SOURCES, Registry

_INTRO = """\
# Configuration reference

Generated from the settings models by `python -m collector.config_reference`;
do not edit by hand. Durations take `250ms`, `30s`, `9m`, `24h`, `7d` or a
number of seconds; sizes take `512KiB`, `100MB` or a number of bytes. Any
string may use `${VAR}` or `${VAR:-default}` from the environment; any secret
key `<name>` (token, password, api_key, ...) may instead be given as
`<name>_file: /path` to read it from a file. Unknown keys are errors.
"""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, PurePath):
        value = str(value)
    text = repr(value) if not isinstance(value, str) else value or '""'
    return f"`{text}`"


def _type(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "")
    text = text.replace("pydantic.types.SecretStr", "secret")
    text = text.replace("pydantic.networks.IPvAnyNetwork", "CIDR")
    text = re.sub(r"(collector|sinks|enrichers|detections)(\.\w+)+\.(\w+)", r"\3", text)
    return text.replace("|", "\\|")


def _table(model: type[BaseModel], skip: frozenset[str] = frozenset()) -> list[str]:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        meaning = _one_line(field.description or "")
        rows.append(f"| `{name}` | {_type(field)} | {_default(field)} | {meaning} |")
    return rows


def _one_line(text: str) -> str:
    """A field description as one table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _plugins(title: str, key: str, registry: Registry[Any]) -> list[str]:
    lines = [f"## {title} (`{key}`)", ""]
    for kind in registry.kinds():
        plugin = registry.get(kind, key)
        lines += [f"### `kind: {kind}`", ""]
        if plugin.description:
            lines += [plugin.description, ""]
        lines += _table(plugin.settings, frozenset({"kind"}))
        lines.append("")
    return lines


def render_reference() -> str:
    """The whole reference as Markdown."""
    load_plugins()
    lines = [_INTRO, "## Top level", ""]
    lines += _table(
        AppSettings, frozenset({"sources", "enrichers", "sinks", "detections"})
    )
    for title, model in (("log", LogSettings), ("http", HttpSettings)):
        lines += ["", f"### `{title}`", "", *_table(model)]
    lines += ["", "### `pipeline`", "", *_table(PipelineSettings), ""]
    lines += _plugins("Sources", "sources", SOURCES)
    lines += _plugins("Enrichers", "enrichers", ENRICHERS)
    lines += _plugins("Detections", "detections", DETECTORS)
    lines += _plugins("Sinks", "sinks", SINKS)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())

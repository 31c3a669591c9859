"""Load one YAML config file into typed, validated settings.

Secrets never need to sit in the file: ``${VAR}`` is replaced from the
environment, and any key ``<name>_file`` is replaced by ``<name>`` holding the
file's contents (stripped). Every error names the exact path in the file, e.g.
``sinks[1].port: Input should be a valid integer``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from collector.errors import ConfigError
from collector.plugins import DETECTORS, ENRICHERS, SINKS, SOURCES, Registry
from collector.secrets import register_secret
from collector.settings_types import ByteSize, Duration, PluginSettings, StrictModel

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_CONFIG_BYTES = 1024 * 1024
_MAX_SECRET_FILE_BYTES = 64 * 1024
_MAX_CONFIG_NODES = 100_000
# Keys whose values are secrets even when written inline; registered so that
# no log line can carry them.
_SECRET_KEYS = re.compile(r"(token|password|secret|api_key|key_passphrase|hmac_key)$")


class LogSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class HttpSettings(StrictModel):
    """The metrics and health endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class PipelineSettings(StrictModel):
    queue_batches: int = Field(default=8, ge=1, le=1024)
    dedupe_retention: Duration = 2 * 86400.0
    drain_timeout: Duration = 25.0
    flush_interval: Duration = 5.0
    commit_interval: Duration = Field(
        default=0.5,
        gt=0,
        le=60,
        description="acknowledged batches are committed together this often",
    )
    commit_max_ids: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="or as soon as this many event ids wait to be committed",
    )


class AppSettings(StrictModel):
    """The whole config file, validated."""

    state_dir: Path = Path("./bbaudit-state")
    log: LogSettings = LogSettings()
    http: HttpSettings = HttpSettings()
    pipeline: PipelineSettings = PipelineSettings()
    sources: list[Any] = Field(default_factory=list)
    enrichers: list[Any] = Field(default_factory=list)
    detections: Any = None
    sinks: list[Any] = Field(default_factory=list)


def load_config(path: Path) -> AppSettings:
    """Read, expand and validate a config file. Raises ``ConfigError``."""
    try:
        size = path.stat().st_size
        if size > _MAX_CONFIG_BYTES:
            raise ConfigError("", f"{path} is {size} bytes; the limit is 1 MiB")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path} is not UTF-8 at byte {exc.start}") from exc

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError("", f"{path} is not valid YAML ({where})") from exc
    _refuse_alias_bombs(data)

    return parse_config(data if data is not None else {}, base_dir=path.parent)


def parse_config(data: Any, *, base_dir: Path | None = None) -> AppSettings:
    """Validate an already-parsed mapping (the config file's content)."""
    if not isinstance(data, Mapping):
        raise ConfigError("", "the config must be a mapping at the top level")
    _refuse_alias_bombs(data)
    expanded = _expand(data, "", base_dir or Path("."))

    try:
        app = AppSettings.model_validate(expanded)
    except ValidationError as exc:
        raise _config_error(exc, "") from None

    sources = _plugin_list(SOURCES, app.sources, "sources")
    _require_unique_names(sources, "sources")
    enrichers = _plugin_list(ENRICHERS, app.enrichers, "enrichers")
    sinks = _plugin_list(SINKS, app.sinks, "sinks")
    _require_unique_names(sinks, "sinks")
    detections = _detections(app.detections)
    return app.model_copy(
        update={
            "sources": sources,
            "enrichers": enrichers,
            "sinks": sinks,
            "detections": detections,
        }
    )


def _refuse_alias_bombs(data: Any) -> None:
    """Refuse a document that expands to more than ``_MAX_CONFIG_NODES`` values.

    YAML aliases share one object between many places, so a 1 kB file can
    expand to billions of values ("billion laughs") that every later walk
    would visit. Counting visits with an early exit costs at most the limit.
    """
    pending = [data]
    visited = 0
    while pending:
        item = pending.pop()
        visited += 1
        if visited > _MAX_CONFIG_NODES:
            raise ConfigError(
                "", "the config expands to too many values (YAML aliases?)"
            )
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _plugin_list(registry: Registry[Any], items: list[Any], key: str) -> list[Any]:
    validated = []
    for index, item in enumerate(items):
        path = f"{key}[{index}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("kind"), str):
            raise ConfigError(path, "expected a mapping with a 'kind' key")
        plugin = registry.get(item["kind"], f"{path}.kind")
        entry = dict(item)
        entry.setdefault("name", f"{item['kind']}-{index}")
        validated.append(_validate(plugin.settings, entry, path))
    return validated


def _detections(data: Any) -> Any:
    if data is None and not DETECTORS.kinds():
        return None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("detections", "expected a mapping")
    entry = dict(data)
    entry.setdefault("kind", "engine")
    plugin = DETECTORS.get(entry["kind"], "detections.kind")
    return _validate(plugin.settings, entry, "detections")


def _validate(model: type[StrictModel], data: Mapping[str, Any], path: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path) from None


def _require_unique_names(items: list[PluginSettings], key: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            raise ConfigError(f"{key}[{index}].name", f"duplicate name {item.name!r}")
        seen.add(item.name)


def _config_error(exc: ValidationError, prefix: str) -> ConfigError:
    """The first validation error as a ConfigError with the full path."""
    first = exc.errors(include_url=False, include_input=False)[0]
    path = prefix
    for part in first["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return ConfigError(path, f"{first['msg']}{suffix}")


def _expand(value: Any, path: str, base_dir: Path) -> Any:
    """Replace ${VAR} references and read *_file secrets, recursively."""
    if isinstance(value, str):
        return _expand_env(value, path)
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", base_dir) for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        return value

    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {key!r}")
        child = f"{path}.{key}" if path else key
        expanded = _expand(item, child, base_dir)
        if key.endswith("_file") and _SECRET_KEYS.search(key.removesuffix("_file")):
            result[key.removesuffix("_file")] = _read_secret(expanded, child, base_dir)
            continue
        if isinstance(expanded, str) and _SECRET_KEYS.search(key):
            register_secret(expanded)
        result[key] = expanded
    return result


def _expand_env(text: str, path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(path, f"environment variable {name} is not set")
            return default
        return value

    return _ENV_REF.sub(replace, text)


def _read_secret(file_name: Any, path: str, base_dir: Path) -> str:
    if not isinstance(file_name, str) or not file_name:
        raise ConfigError(path, "expected a file path")
    secret_path = Path(file_name)
    if not secret_path.is_absolute():
        secret_path = base_dir / secret_path
    try:
        if secret_path.stat().st_size > _MAX_SECRET_FILE_BYTES:
            raise ConfigError(path, f"{secret_path} is larger than 64 KiB")
        secret = secret_path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read secret file {secret_path}") from exc
    register_secret(secret)
    return secret


__all__ = [
    "AppSettings",
    "ByteSize",
    "Duration",
    "HttpSettings",
    "LogSettings",
    "PipelineSettings",
    "load_config",
    "parse_config",
]

"""Hostile config files and values are refused with a ConfigError that names
the place, quickly and without unbounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from collector.config import load_config, parse_config
from collector.errors import ConfigError

BOMB_TIMEOUT_S = 8.0


def file_sink(**values: Any) -> dict[str, Any]:
    """A config with one file sink carrying ``values``."""
    return {"sinks": [{"kind": "file", "name": "f", "path": "/tmp/x.jsonl", **values}]}


def dc_source(**values: Any) -> dict[str, Any]:
    """A config with one DC REST source carrying ``values``."""
    source = {
        "kind": "dc_rest",
        "name": "dc",
        "base_url": "https://bitbucket.example",
        "auth": {"token": "t"},
        **values,
    }
    return {"sources": [source]}


SPOOL_PATH = "sinks[0].spool_max_bytes"
REJECTED = {
    "negative spool size": (file_sink(spool_max_bytes=-1), SPOOL_PATH),
    "negative size text": (file_sink(spool_max_bytes="-5MiB"), SPOOL_PATH),
    "zero batch": (file_sink(batch_max_records=0), "sinks[0].batch_max_records"),
    "huge batch": (file_sink(batch_max_records=10**9), "sinks[0].batch_max_records"),
    "negative duration": (file_sink(batch_max_wait="-1s"), "sinks[0].batch_max_wait"),
    "http port too big": ({"http": {"port": 70000}}, "http.port"),
    "http port negative": ({"http": {"port": -1}}, "http.port"),
    "syslog port too big": (
        {"sinks": [{"kind": "syslog", "name": "s", "host": "h", "port": 65536}]},
        "sinks[0].port",
    ),
    "syslog port zero": (
        {"sinks": [{"kind": "syslog", "name": "s", "host": "h", "port": 0}]},
        "sinks[0].port",
    ),
    "zero queue": ({"pipeline": {"queue_batches": 0}}, "pipeline.queue_batches"),
    "negative response cap": (
        dc_source(max_response_bytes=-1),
        "sources[0].max_response_bytes",
    ),
    "page size zero": (dc_source(limit=0), "sources[0].limit"),
    "file url": (dc_source(base_url="file:///etc/passwd"), "sources[0].base_url"),
    "unknown key": (file_sink(verify_everything=False), "sinks[0]"),
    "bool as size": (file_sink(spool_max_bytes=True), "sinks[0].spool_max_bytes"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_hostile_value_is_rejected_with_its_path(case: str) -> None:
    """Each hostile value raises a ConfigError that names its place."""
    data, path = REJECTED[case]

    with pytest.raises(ConfigError) as caught:
        parse_config(data)

    assert caught.value.path.startswith(path), str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "99999999999999d"])
def test_non_finite_or_absurd_duration_is_rejected(value: object) -> None:
    """A duration must be a finite number of seconds below a sane ceiling."""
    with pytest.raises(ConfigError):
        parse_config(file_sink(batch_max_wait=value))


def test_huge_plugin_name_is_rejected() -> None:
    """A 100 kB sink name is refused rather than carried into labels and logs."""
    with pytest.raises(ConfigError):
        parse_config(file_sink(name="n" * 100_000))


def test_config_file_over_one_mebibyte_is_rejected(tmp_path: Path) -> None:
    """A file over the 1 MiB cap is refused before it is parsed."""
    path = tmp_path / "big.yaml"
    path.write_text("state_dir: x\n# " + "x" * (1024 * 1024) + "\n")

    with pytest.raises(ConfigError, match="limit is 1 MiB"):
        load_config(path)


def test_python_object_tags_are_not_constructed(tmp_path: Path) -> None:
    """``!!python/object`` tags are a YAML error, never code (safe_load)."""
    path = tmp_path / "tag.yaml"
    path.write_text("state_dir: !!python/object/apply:os.system ['true']\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_non_utf8_config_is_rejected(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are refused with their position."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"state_dir: caf\xe9\n")

    with pytest.raises(ConfigError, match="not UTF-8 at byte 14"):
        load_config(path)


def billion_laughs(levels: int) -> str:
    """A YAML alias bomb: ``levels`` layers of nine references each."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    lines.append(f"sources: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs file (under 1 kB) fails fast with a ConfigError."""
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs(9))
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from pathlib import Path
        from collector.app import load_plugins
        from collector.config import load_config
        from collector.errors import ConfigError
        load_plugins()
        try:
            load_config(Path({str(path)!r}))
        except ConfigError as exc:
            print("ConfigError", exc)
        """
    )

    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            timeout=BOMB_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still expanding after {BOMB_TIMEOUT_S:g} s")

    assert done.stdout.startswith(b"ConfigError"), done.stderr[-500:]
    assert b"alias" in done.stdout.lower() or b"values" in done.stdout.lower()

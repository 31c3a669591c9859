"""Config loading: typed settings, secrets from files and the environment, and
errors that name the exact path."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import load_config, parse_config
from collector.errors import ConfigError, UnknownPluginError
from collector.secrets import redact_text


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_defaults() -> None:
    """An empty mapping is a valid config with every default filled in."""
    settings = parse_config({})

    assert settings.pipeline.queue_batches == 8
    assert settings.sources == []


def test_sink_entry_is_validated_by_its_kind(tmp_path: Path) -> None:
    """A sink entry becomes that kind's typed settings, with durations parsed."""
    path = _write(
        tmp_path,
        "sinks:\n  - kind: file\n    path: out.jsonl\n    batch_max_wait: 250ms\n",
    )

    settings = load_config(path)

    sink = settings.sinks[0]
    assert sink.name == "file-0"
    assert sink.batch_max_wait == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (
            "sinks:\n  - kind: file\n    path: a\n    batch_max_records: lots\n",
            "sinks[0].batch_max_records",
        ),
        ("sinks:\n  - kind: file\n", "sinks[0].path"),
        ("sinks:\n  - kind: file\n    path: a\n    colour: red\n", "sinks[0].colour"),
        ("pipeline:\n  queue_batches: 0\n", "pipeline.queue_batches"),
        (
            "sinks:\n  - {kind: file, path: a}\n  - {kind: file, path: b}\n"
            "  - {kind: file, path: c, name: file-1}\n",
            "sinks[2].name",
        ),
        ("sinks:\n  - path: a\n", "sinks[0]"),
    ],
)
def test_errors_name_the_exact_path(tmp_path: Path, text: str, path: str) -> None:
    """Every validation error carries the path of the offending key."""
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))

    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_unknown_kind_lists_the_known_ones() -> None:
    """A typo in a kind says which kinds exist."""
    with pytest.raises(UnknownPluginError, match=r"known: .*file"):
        parse_config({"sinks": [{"kind": "fiel", "path": "x"}]})


def test_environment_variables_are_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """${VAR} comes from the environment and ${VAR:-default} falls back."""
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    path = _write(
        tmp_path,
        "state_dir: ${OUT_DIR}/state\nlog:\n  level: ${LOG_LEVEL:-warning}\n",
    )

    settings = load_config(path)

    assert settings.state_dir == tmp_path / "state"
    assert settings.log.level == "warning"


def test_missing_environment_variable_is_an_error(tmp_path: Path) -> None:
    """An unset variable without a default names its path."""
    with pytest.raises(ConfigError, match="state_dir: environment variable"):
        load_config(_write(tmp_path, "state_dir: ${BBAUDIT_SURELY_UNSET}\n"))


def test_secret_files_are_read_and_redacted(tmp_path: Path) -> None:
    """A *_file secret is read into its key and can never be logged verbatim."""
    secret_file = tmp_path / "hmac"
    secret_file.write_text("s3cr3t-value-from-file\n", encoding="utf-8")
    data = {"sinks": [{"kind": "file", "path": "x", "hmac_key_file": str(secret_file)}]}

    with pytest.raises(ConfigError):
        parse_config(data)  # the file sink has no hmac_key option

    assert "s3cr3t" not in redact_text("token=s3cr3t-value-from-file")


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    """Broken YAML reports where it broke."""
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+, column \d+\)"):
        load_config(_write(tmp_path, "sinks:\n  - kind: [file\n"))


def test_oversized_config_is_rejected(tmp_path: Path) -> None:
    """A config file larger than 1 MiB is refused before parsing."""
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (1024 * 1024 + 1))

    with pytest.raises(ConfigError, match="limit"):
        load_config(path)

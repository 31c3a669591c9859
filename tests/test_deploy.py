"""Tests for deploy/: example configs validate, manifests are valid and hardened,
and the Dockerfile's install step works."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.app import load_plugins
from collector.config import AppSettings, load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLES = sorted((DEPLOY / "examples").glob("*.yaml"))
MANIFESTS = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
SECRETS_DIR = "/etc/bbaudit/secrets/"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_SECRET_FILE = re.compile(r"_file:\s*(/etc/bbaudit/secrets/\S+)")


def _load_example(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AppSettings:
    """Load an example with its secret files and env vars stood in by dummies."""
    text = example.read_text(encoding="utf-8")
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for path in _SECRET_FILE.findall(text):
        (secrets / Path(path).name).write_text("dummy-secret-value\n")
    for name in _ENV_REF.findall(text):
        monkeypatch.setenv(name, "dummy-env-value")

    copy = tmp_path / example.name
    copy.write_text(text.replace(SECRETS_DIR, f"{secrets}/"), encoding="utf-8")
    load_plugins()
    return load_config(copy)


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind(kind: str) -> dict[str, Any]:
    [doc] = [d for d in _manifests() if d["kind"] == kind]
    return doc


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_every_expected_example_exists() -> None:
    """The documented example configs are all present."""
    names = {p.name for p in EXAMPLES}

    assert names >= {
        "dc-rest.yaml",
        "dc-files.yaml",
        "cloud.yaml",
        "sinks-kafka.yaml",
        "sinks-splunk-hec.yaml",
        "sinks-syslog.yaml",
        "full.yaml",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example config loads and validates against the registered plugins."""
    settings = _load_example(example, tmp_path, monkeypatch)

    assert settings.sources
    assert settings.sinks


def test_configmap_config_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config embedded in the Kubernetes ConfigMap validates too."""
    embedded = tmp_path / "configmap-config.yaml"
    embedded.write_text(_by_kind("ConfigMap")["data"]["config.yaml"])

    settings = _load_example(embedded, tmp_path, monkeypatch)

    assert settings.http.host == "0.0.0.0"
    assert str(settings.state_dir).startswith("/var/lib/bbaudit")


def test_manifests_validate_against_kubernetes_schemas() -> None:
    """Every core manifest passes kubernetes-validate in strict mode, offline."""
    files = [
        str(p)
        for p in sorted(MANIFESTS.glob("*.yaml"))
        if p.name not in ("kustomization.yaml", "servicemonitor.yaml")
    ]
    tool = Path(sys.executable).parent / "kubernetes-validate"

    result = subprocess.run(
        [str(tool), "--strict", "--quiet", *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_core_manifests() -> None:
    """kustomization.yaml names every manifest except the optional ServiceMonitor."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    expected = {
        p.name
        for p in MANIFESTS.glob("*.yaml")
        if p.name not in ("kustomization.yaml", "servicemonitor.yaml")
    }

    assert set(kustomization["resources"]) == expected


def test_deployment_is_hardened_single_writer() -> None:
    """One replica, Recreate, restricted security context, probes, resources."""
    deployment = _by_kind("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    security = container["securityContext"]

    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["automountServiceAccountToken"] is False


def test_grace_period_exceeds_drain_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """terminationGracePeriodSeconds leaves a margin over pipeline.drain_timeout."""
    embedded = tmp_path / "configmap-config.yaml"
    embedded.write_text(_by_kind("ConfigMap")["data"]["config.yaml"])
    drain = _load_example(embedded, tmp_path, monkeypatch).pipeline.drain_timeout
    grace = _by_kind("Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]

    assert grace >= drain + 15


def test_service_and_monitor_select_the_pod() -> None:
    """The Service and ServiceMonitor select the pod's labels and metrics port."""
    pod_labels = _by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = _by_kind("Service")
    monitor = yaml.safe_load((MANIFESTS / "servicemonitor.yaml").read_text())

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_secret_holds_placeholders_only() -> None:
    """The Secret manifest ships placeholders, never a real-looking credential."""
    secret = _by_kind("Secret")

    for value in secret["stringData"].values():
        assert "REPLACE" in value


def test_dockerfile_runs_as_fixed_non_root_user() -> None:
    """USER is the fixed non-root UID 10001 and comes after the last RUN."""
    instructions = _instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    last_run = max(i for i, (kw, _) in enumerate(instructions) if kw == "RUN")
    last_user = max(i for i, (kw, _) in enumerate(instructions) if kw == "USER")

    assert users[-1].split(":")[0] == "10001"
    assert last_user > last_run


def test_dockerfile_entrypoint_healthcheck_and_base() -> None:
    """Pinned base, HEALTHCHECK on /healthz, ENTRYPOINT, CMD, STOPSIGNAL, EXPOSE."""
    instructions = dict(_instructions())
    text = DOCKERFILE.read_text()
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)

    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    assert "/healthz" in text
    assert instructions["HEALTHCHECK"].startswith("--interval")
    assert instructions["ENTRYPOINT"] == '["bbaudit"]'
    assert instructions["CMD"] == '["run", "-c", "/etc/bbaudit/config.yaml"]'
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert instructions["EXPOSE"] == "9108"


def test_dockerfile_copies_what_the_build_needs() -> None:
    """Every COPY source of the build stage exists in the repository."""
    sources = [
        rest.split()[:-1]
        for keyword, rest in _instructions()
        if keyword == "COPY" and "--from" not in rest
    ]

    for group in sources:
        for source in group:
            assert (ROOT / source).exists(), source


@pytest.mark.slow
def test_dockerfile_install_step_works(tmp_path: Path) -> None:
    """The Dockerfile's venv install, run on a copy of the build context, works."""
    context = tmp_path / "src"
    context.mkdir()
    for keyword, rest in _instructions():
        if keyword == "COPY" and "--from" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                _copy(ROOT / source, context / source)
    [install] = [rest for kw, rest in _instructions() if kw == "RUN" and "pip" in rest]
    assert shlex.split(install)[0] == "python"
    command = install.replace("/opt/bbaudit", str(tmp_path / "venv")).replace(
        "python ", f"{sys.executable} ", 1
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-euc", command],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    print(f"install step took {time.monotonic() - started:.1f}s")


def _copy(source: Path, target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if source.is_dir():
        shutil.copytree(source, target, ignore=ignore)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

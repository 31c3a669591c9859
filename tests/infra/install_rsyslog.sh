#!/usr/bin/env bash
# Installs rsyslog with the OpenSSL netstream driver, the RELP input (imrelp, from
# rsyslog-relp; Debian 12's librelp 1.11 does TLS with GnuTLS or OpenSSL) and the
# openssl CLI, which the syslog sink tests use as their receiver (started
# unprivileged by a pytest fixture).
# Idempotent: does nothing when rsyslogd, the ossl driver, imrelp and openssl are
# present.
set -euo pipefail

have_module() {
    ls /usr/lib/*/rsyslog/"$1".so /usr/lib/rsyslog/"$1".so >/dev/null 2>&1
}

if command -v rsyslogd >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 \
    && have_module lmnsd_ossl && have_module imrelp; then
    echo "rsyslog, rsyslog-openssl, rsyslog-relp and openssl already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -y
# --no-install-recommends keeps logrotate and friends out; no service is started by
# the tests (policy-rc.d may still start the system rsyslog on a real host; harmless).
apt-get install -y --no-install-recommends rsyslog rsyslog-openssl rsyslog-relp openssl

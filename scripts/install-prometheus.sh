#!/usr/bin/env bash
# Install Debian's Prometheus (the server and promtool) for the rule tests and the
# real-Prometheus test (tests/observability/) and scripts/deploy-lint.sh's rule checks.
# Idempotent: does nothing when both binaries are there. Needs root (CI runs as root).
# The package's service is never started: policy-rc.d refuses it during the install.
#
# Usage: scripts/install-prometheus.sh
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing prometheus needs root (apt-get); run as root or with sudo" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "prometheus installed: $(prometheus --version 2>&1 | head -n 1)"

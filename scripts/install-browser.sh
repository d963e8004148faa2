#!/usr/bin/env bash
# Install Debian's Chromium for the Swagger UI browser test (tests/contract/test_docs_browser.py).
# Playwright drives /usr/bin/chromium through `executable_path`: it never downloads a browser.
# Idempotent: does nothing when Chromium is already there. Needs root (CI runs as root).
#
# Usage: scripts/install-browser.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing chromium needs root (apt-get); run as root or with sudo" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"

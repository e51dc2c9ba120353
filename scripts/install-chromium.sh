#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for tests/reporting/test_report_browser.py.
#
# Playwright's own browser download does not work in our CI image, so we use the distribution
# package. Idempotent: does nothing when a chromium binary is already on PATH.
# Usage: scripts/install-chromium.sh   (as root, or with sudo available)
set -euo pipefail

for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "chromium already installed: $(command -v "$bin") ($("$bin" --version 2>/dev/null || true))"
        exit 0
    fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-chromium.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed: $(command -v chromium) ($(chromium --version 2>/dev/null || true))"

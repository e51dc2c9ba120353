#!/usr/bin/env bash
# Install Debian's bubblewrap (`bwrap`), the strongest sandbox autolab_core.runner uses, so the
# tests in tests/core/test_sandbox.py and test_runner*.py cover the `bwrap` isolation level.
#
# Idempotent: does nothing when bwrap is already on PATH. Whether bwrap can run also depends on
# unprivileged user namespaces (e.g. Ubuntu's AppArmor restriction); the runner detects that at
# start-up and falls back to Landlock or none, and the tests of an unavailable level are skipped.
# Usage: scripts/install-bubblewrap.sh   (as root, or with sudo available)
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
    echo "bubblewrap already installed: $(command -v bwrap) ($(bwrap --version 2>/dev/null || true))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-bubblewrap.sh: need root (or sudo) to apt-get install bubblewrap" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
echo "installed: $(command -v bwrap) ($(bwrap --version 2>/dev/null || true))"

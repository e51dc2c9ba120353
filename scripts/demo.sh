#!/usr/bin/env bash
# Install autolab and run its demo: a real search on a tiny CPU language model.
#
#   bash scripts/demo.sh [DIRECTORY] [autolab demo options]
#
# The demo needs torch. If none is installed this installs `torch==2.13.0`, which is a CPU
# build on this project's CI machines; on your machine you may prefer to install the torch that
# fits it first (https://pytorch.org/get-started), and this script will use it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[training]"
exec "$PY" -m autolab demo "$@"

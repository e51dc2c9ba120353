"""The harness's model sandbox also works inside the runner's bubblewrap sandbox, where the
evaluation runs: a fresh /proc cannot be mounted there, so the child gets the outer one, and
held-out files stay hidden from the model process (real bubblewrap, nested)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autolab_core import sandbox

INNER = """
import subprocess, sys
from pathlib import Path
from autolab_core import eval_harness as h
secret = Path(sys.argv[1])
argv = h._bwrap_argv(secret.parent, (), [secret])
read = subprocess.run([*argv, "--", "cat", str(secret)], capture_output=True, text=True)
print(h.isolation_available(), h._own_proc(), repr(read.stdout))
"""


@pytest.mark.skipif("bwrap" not in sandbox.available(), reason="bubblewrap cannot start here")
def test_model_sandbox_nests_in_the_runners_and_hides_held_out_data(tmp_path: Path) -> None:
    secret = tmp_path / "val.bin"
    secret.write_text("held-out answers")
    policy = sandbox.Policy(tmp_path, [tmp_path], [], True, [])
    box = sandbox.wrap("bwrap", [sys.executable, "-c", INNER, str(secret)], policy)
    done = subprocess.run(box.argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
                          preexec_fn=box.preexec)
    assert done.returncode == 0, done.stderr
    level, own_proc, text = done.stdout.split(maxsplit=2)
    assert level == "bwrap" and own_proc == "False"  # nested: the outer /proc, read-only
    assert "held-out" not in text

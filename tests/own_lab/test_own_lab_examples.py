"""The three worked configurations of docs/own-lab.md, each on a CPU stand-in of its layout.

The ``autolab.toml`` blocks are read from the document itself, so the docs cannot drift from
what is tested. Everything runs through the real command line (subprocesses), real git and
real training (NumPy), nothing downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from standins import autoresearch_like, finished_candidates, git_repo, hydra_like, nanogpt_like, scores

from autolab.agents.knobs import find_knobs

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-lab.md"
STANDINS: dict[str, Callable[[Path], Path]] = {
    "autoresearch": autoresearch_like, "nanogpt": nanogpt_like, "hydra": hydra_like,
}


def doc_config(example: str) -> str:
    match = re.search(rf"<!-- example: {example} -->\n```toml\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/own-lab.md has no toml block for example {example!r}"
    return match.group(1)


def autolab(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autolab", *args], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("example", sorted(STANDINS))
def test_init_proposes_what_the_docs_configure(tmp_path: Path, example: str) -> None:
    root = git_repo(STANDINS[example](tmp_path))
    done = autolab("init", "--probe", "--probe-time", "60s", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    proposed = tomllib.loads((root / "autolab.toml").read_text())
    documented = tomllib.loads(doc_config(example))
    assert proposed["metric"]["name"] == documented["metric"]["name"]
    assert proposed["metric"]["direction"] == documented["metric"]["direction"]
    assert proposed["run"]["command"] == documented["run"]["command"].split(" trainer.")[0]
    assert set(proposed["files"]["editable"]) >= set(documented["files"]["editable"])


@pytest.mark.parametrize("example", sorted(STANDINS))
def test_the_documented_configuration_runs_candidates(tmp_path: Path, example: str) -> None:
    root = git_repo(STANDINS[example](tmp_path))
    (root / "autolab.toml").write_text(doc_config(example))
    done = autolab("init", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    done = autolab("run", "-n", "2", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = scores(root)
    baselines = [r for r in rows if r["role"] == "baseline" and r["value"]]
    assert len(baselines) == 3, done.stdout
    candidates = finished_candidates(root)
    assert len(candidates) >= 2, done.stdout
    cfg = tomllib.loads(doc_config(example))
    editable = cfg["files"]["editable"]
    files = {p: (root / p).read_text() for p in editable}
    names = {k.name for k in find_knobs(files, editable, cfg["run"]["command"].split())}
    for row in candidates:  # each candidate changed one knob of the documented files
        changed = row["title"].split(" ")[0]
        assert changed in names, (changed, names)

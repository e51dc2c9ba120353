"""Fault test (issue 11): a job that moves ``main`` or an experiment branch stops the run.

Real git lab (tests/toylab.py), the real loop (``build_loop``), the local backend and the job
runner. The patch finds the lab by an absolute path baked into it (an exported tree has no
``.git``) and runs ``git update-ref`` on the lab's repository from inside its training.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from toylab import TRAIN, make_toy_lab

from autolab.run.assemble import build_loop
from autolab.run.loop import RunOptions
from autolab_core.guard import JOURNAL, TamperAlert
from autolab_core.lab import BRANCH_PREFIX, Lab
from autolab_core.models import ExperimentStatus, Hypothesis

MOVE_REF = '''
import subprocess
LAB = {lab!r}
def git(*args):
    return subprocess.run(["git", "-C", LAB, *args], check=True, capture_output=True,
                          text=True).stdout.strip()
main = git("rev-parse", "refs/heads/main")
ref = {ref!r} or git("for-each-ref", "--count=1", "--format=%(refname)", "refs/heads/{prefix}*")
fake = git("commit-tree", main + "^{{tree}}", "-p", main, "-m", "a better evaluation")
git("update-ref", ref, fake)
'''


class OneIdea:
    """Proposes one patch (a new ``train.py``), then nothing."""

    def __init__(self, code: str) -> None:
        self.code: str | None = code

    def propose(self, digest: object, n: int) -> list[Hypothesis]:
        if self.code is None:
            return []
        h = Hypothesis(id="tamper", title="move a ref", source="llm",
                       edits=({"file": "train.py", "replace": self.code},))
        self.code = None
        return [h]

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        return {"train.py": hypothesis.edits[0]["replace"]}


def tampering_lab(tmp_path: Path, ref: str, isolation: str) -> tuple[Lab, OneIdea]:
    lab = make_toy_lab(tmp_path / "lab")
    toml = lab.root / "autolab.toml"
    toml.write_text(toml.read_text().replace("[run]\n", f'[run]\nisolation = "{isolation}"\n'))
    lab.repo.git.commit("-qam", f"isolation {isolation}")
    lab = Lab(lab.root)
    code = TRAIN + MOVE_REF.format(lab=str(lab.root), ref=ref, prefix=BRANCH_PREFIX)
    return lab, OneIdea(code)


def last_written(lab: Lab, ref: str) -> str:
    """The commit autolab last wrote to ``ref`` (its journal of ref writes)."""
    lines = (lab.state_dir / JOURNAL).read_text().splitlines()
    return [line.split()[1] for line in lines if line.split()[0] == ref][-1]


@pytest.mark.parametrize("ref", ["refs/heads/main", ""], ids=["main", "experiment-branch"])
def test_a_job_that_moves_a_ref_stops_the_run_and_main_stays(tmp_path: Path, ref: str) -> None:
    lab, idea = tampering_lab(tmp_path, ref, isolation="none")  # no sandbox: detection must catch it
    said: list[str] = []
    loop = build_loop(lab, RunOptions(workers=2, poll_interval=0.05), say=said.append)
    loop.roles.proposer = loop.roles.writer = idea
    with pytest.raises(TamperAlert) as caught:
        loop.run()
    alert = str(caught.value)
    assert "was moved outside autolab" in alert and caught.value.actual in alert
    moved = caught.value.ref
    assert moved == "refs/heads/main" if ref else moved.startswith(f"refs/heads/{BRANCH_PREFIX}")
    assert any("moved outside autolab" in line for line in said)  # told on the console too
    # main (and the moved ref) are where autolab last wrote them; the fake commit is kept aside.
    assert lab.main_commit() == last_written(lab, "refs/heads/main")
    assert lab._git("rev-parse", moved).strip() == last_written(lab, moved)
    tampered = lab._git("for-each-ref", "--format=%(objectname)", "refs/autolab/tampered/")
    assert caught.value.actual in tampered
    assert subprocess.run(["git", "-C", str(lab.root), "merge-base", "--is-ancestor",
                           caught.value.actual, "main"]).returncode != 0


def test_in_a_sandbox_the_job_cannot_reach_the_lab(tmp_path: Path) -> None:
    from autolab_core import sandbox

    if "bwrap" not in sandbox.available():
        pytest.skip("bubblewrap is not usable here (scripts/test.sh installs it)")
    lab, idea = tampering_lab(tmp_path, "refs/heads/main", isolation="bwrap")
    loop = build_loop(lab, RunOptions(workers=2, poll_interval=0.05), say=lambda _t: None)
    loop.roles.proposer = loop.roles.writer = idea
    exps = {e.hypothesis.title: e for e in loop.run()}
    cand = exps["move a ref"]
    assert cand.status is ExperimentStatus.FAILED and cand.hardware.get("isolation") == "bwrap"
    # The lab is an empty folder inside the sandbox: git finds no repository there.
    assert "'rev-parse', 'refs/heads/main']' returned non-zero" in (cand.reason or "")
    assert lab.main_commit() == last_written(lab, "refs/heads/main")


RELATIVE_GIT = '''
import subprocess
subprocess.run(["git", "update-ref", "refs/heads/main", "HEAD"], check=True)
'''


def test_git_in_the_exported_tree_finds_no_repository(tmp_path: Path) -> None:
    """Without a sandbox too: the tree lies inside the lab's state directory, and git must not
    find the lab's repository by walking up from it (``GIT_CEILING_DIRECTORIES``)."""
    lab, _ = tampering_lab(tmp_path, "refs/heads/main", isolation="none")
    loop = build_loop(lab, RunOptions(workers=2, poll_interval=0.05), say=lambda _t: None)
    loop.roles.proposer = loop.roles.writer = OneIdea(TRAIN + RELATIVE_GIT)
    exps = {e.hypothesis.title: e for e in loop.run()}
    cand = exps["move a ref"]
    assert cand.status is ExperimentStatus.FAILED and "not a git repository" in (cand.reason or "")
    assert lab.main_commit() == last_written(lab, "refs/heads/main")

"""Failure reasons that show the cause, retried baselines, and a deleted `.autolab/` rebuilt.

Real git repositories and real worktrees (what `git worktree add` refuses after the folder
was deleted by hand).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from autolab.lab_recovery import (
    OutputTail,
    blocking_baseline_failures,
    cause,
    failure_reason,
    recover_state,
)
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis

TRACEBACK = """\
step 0: starting
Traceback (most recent call last):
  File "train.py", line 1, in <module>
    import torch
ModuleNotFoundError: No module named 'torch'
AUTOLAB_ERROR {"exit_code": 1, "reason": "training exited with code 1"}
"""


def test_the_tail_keeps_the_last_lines_across_chunks_without_protocol_lines() -> None:
    tail = OutputTail(n=3)
    for i in range(0, len(TRACEBACK), 7):  # fed in odd-sized chunks, as logs arrive
        tail.feed(TRACEBACK[i:i + 7])
    assert tail.lines() == ['  File "train.py", line 1, in <module>', "    import torch",
                            "ModuleNotFoundError: No module named 'torch'"]


def test_the_reason_names_the_cause_and_shows_the_last_lines() -> None:
    tail = OutputTail()
    tail.feed(TRACEBACK + "token hf_abcdefghijklmnop leaked\n")
    text = failure_reason("training exited with code 1", tail.lines(),
                          secrets=["hf_abcdefghijklmnop"])
    first, *rest = text.splitlines()
    assert first == "training exited with code 1: ModuleNotFoundError: No module named 'torch'"
    assert rest[-1] == "  | token *** leaked" and "  |     import torch" in rest
    assert cause(["all good"]) is None
    assert failure_reason("killed", []) == "killed"


def _baseline(exp_id: str, failed_at: float, code: str = "c") -> Experiment:
    exp = Experiment(id=exp_id, hypothesis=Hypothesis(id="b", title="baseline"), base_commit="m",
                     branch="", role="baseline", base_code=code)
    return exp.with_status(ExperimentStatus.QUEUED, at=failed_at - 1).with_status(
        ExperimentStatus.FAILED, "training exited with code 1", at=failed_at)


def test_only_this_runs_baseline_failures_block() -> None:
    started = time.time()
    old = [_baseline(f"000{i}", started - 3600) for i in range(1, 4)]
    assert blocking_baseline_failures(old, "c", started) == []  # retried at the next run
    new = [_baseline("0004", started + 1), _baseline("0005", started + 2, code="other")]
    assert [e.id for e in blocking_baseline_failures(old + new, "c", started)] == ["0004"]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    (tmp_path / "train.py").write_text("print('val_loss: 1.0')\n")
    (tmp_path / "autolab.toml").write_text(
        '[metric]\nname = "val_loss"\nsource = "pattern"\npattern = "val_loss: ([0-9.]+)"\n')
    return Lab.init(tmp_path)


def test_a_deleted_state_folder_is_rebuilt_with_notes(lab: Lab) -> None:
    exp = Experiment(id="0001", hypothesis=Hypothesis(id="b", title="baseline"),
                     base_commit=lab.main_commit(), branch="", role="baseline"
                     ).with_status(ExperimentStatus.FINISHED)
    lab.record_on_main([exp], "autolab: record 0001")
    worktree = lab.state_dir / "worktrees" / "0002"
    lab.add_worktree(worktree, lab.main_commit())
    shutil.rmtree(lab.state_dir)  # the user's "reset"
    lab = Lab(lab.root)
    notes = recover_state(lab)
    assert notes == ["pruned 1 worktree registration(s) whose folders were deleted",
                     "rebuilt 1 experiment record(s) in .autolab/ from lab-records/ on main"]
    assert lab.add_worktree(worktree, lab.main_commit()).exists()
    assert [e.id for e in lab.load_experiments()] == ["0001"]
    assert lab.new_experiment_id() == "0002"
    assert recover_state(lab) == []  # nothing left to fix


def test_a_worktree_whose_folder_was_deleted_can_be_checked_out_again(lab: Lab) -> None:
    """What the next run used to crash on ("missing but already registered worktree")."""
    worktree = lab.state_dir / "worktrees" / "0001"
    lab.add_worktree(worktree, lab.main_commit())
    shutil.rmtree(lab.state_dir)
    assert (Lab(lab.root).add_worktree(worktree, lab.main_commit()) / "train.py").exists()

"""Jobs cannot reach the lab, on real git repositories: exported trees without ``.git``, the
MainGuard's alert when a job (a real process) moves ``main`` or an experiment branch, and the
protected files and data pinned at lab init."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_runner import LEVELS, new_key, run_job

from autolab_core.errors import LabError
from autolab_core.guard import MainGuard, Pins, TamperAlert, run_key, run_spec
from autolab_core.hashing import hash_globs, hash_paths
from autolab_core.job import ResultError, RunSpec, parse_result
from autolab_core.lab import BRANCH_PREFIX, Lab

CONFIG = """\
[run]
command = "python train.py"
eval_command = "python evaluate.py"

[metric]
name = "val_loss"
source = "eval"

[files]
editable = ["train.py"]
protected = ["evaluate.py"]
protected_data = ["data/*.txt"]
"""
EVALUATE = """\
import json, os
v = float(open(os.path.join(os.environ["AUTOLAB_OUTPUT_DIR"], "model.txt")).read())
json.dump({"val_loss": v * float(open("data/val.txt").read())},
          open(os.path.join(os.environ["AUTOLAB_OUTPUT_DIR"], "result.json"), "w"))
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_lab(tmp_path: Path) -> Lab:
    root = tmp_path / "lab"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "data" / "val.txt").write_text("3.0")
    (root / ".gitignore").write_text("data/\n")  # held-out data git does not track
    return Lab.init(root, CONFIG)


def evil_commit(lab: Lab) -> str:
    """A commit a job could make with the lab's git: the evaluation rewritten."""
    return lab._commit_files(lab.main_commit(), {"evaluate.py": "print('0.0')\n"}, "evil")


def test_exported_tree_has_the_commit_and_the_data_but_no_git(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    assert lab.config.files.protected_data == ["data/*.txt"]
    branch = f"{BRANCH_PREFIX}0001"
    commit = lab.create_branch(branch, lab.main_commit(), {"train.py": "print('new')\n"}, "p")
    tree = lab.export_tree(commit, tmp_path / "jobs" / "0001")
    assert (tree / "train.py").read_text() == "print('new')\n"
    assert (tree / "data" / "val.txt").read_text() == "3.0"
    assert not (tree / ".git").exists()
    found = subprocess.run(["git", "-C", str(tree), "rev-parse", "--git-dir"],
                           capture_output=True, text=True, check=False)
    assert found.returncode != 0  # no repository to move refs in
    with pytest.raises(LabError, match="cannot export"):
        lab.export_tree("0" * 40, tmp_path / "jobs" / "bad")


def test_a_job_that_moves_main_raises_the_alert_and_main_is_put_back(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    lab.guard = MainGuard(lab)
    written = lab.update_main({"notes.txt": "autolab wrote this"}, "records")
    bad = evil_commit(lab)
    # the job: a real process with the lab's path, as an unsandboxed job could find it
    subprocess.run([sys.executable, "-c", f"import subprocess; subprocess.run(['git', '-C', "
                    f"{str(lab.root)!r}, 'update-ref', 'refs/heads/main', {bad!r}], check=True)"],
                   check=True)
    with pytest.raises(TamperAlert, match=bad) as alert:
        lab.guard.check()
    assert alert.value.expected == written and alert.value.actual == bad
    assert lab.main_commit() == written  # as autolab last wrote it
    assert git(lab.root, "rev-parse", f"refs/autolab/tampered/main-{bad[:12]}") == bad
    lab.guard.check()  # restored: quiet again


def test_orchestrator_never_builds_on_a_moved_main(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    lab.guard = MainGuard(lab)
    before = lab.main_commit()
    bad = evil_commit(lab)
    git(lab.root, "update-ref", "refs/heads/main", bad)
    with pytest.raises(TamperAlert, match=bad):
        lab.update_main({"lab-records/scores.tsv": "id\n"}, "records")
    assert lab.main_commit() == bad and before != bad  # nothing was committed on top of it


def test_moved_and_new_experiment_branches_raise_the_alert(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    lab.guard = MainGuard(lab)
    branch = f"refs/heads/{BRANCH_PREFIX}0001"
    mine = lab.create_branch(f"{BRANCH_PREFIX}0001", lab.main_commit(), {"train.py": "x=1\n"}, "p")
    bad = evil_commit(lab)
    git(lab.root, "update-ref", branch, bad)
    with pytest.raises(TamperAlert, match=f"{BRANCH_PREFIX}0001"):
        lab.guard.check()
    assert git(lab.root, "rev-parse", branch) == mine
    git(lab.root, "update-ref", f"refs/heads/{BRANCH_PREFIX}9999", bad)
    with pytest.raises(TamperAlert, match="created outside autolab"):
        lab.guard.check()
    assert not lab.branch_exists(f"{BRANCH_PREFIX}9999")


def test_another_autolab_process_may_move_main(tmp_path: Path) -> None:
    """``autolab approve`` in a second process writes through Lab too: no alert."""
    lab = make_lab(tmp_path)
    lab.guard = MainGuard(lab)
    subprocess.run([sys.executable, "-c", "from autolab_core.lab import Lab; import sys; "
                    "Lab(sys.argv[1]).update_main({'x.txt': 'approved'}, 'approve')",
                    str(lab.root)], check=True)
    lab.guard.check()
    lab.update_main({"y.txt": "next"}, "records")


@pytest.mark.parametrize("level", [p for p in LEVELS if p.values[0] != "none"])
def test_a_sandboxed_job_cannot_reach_the_labs_git(tmp_path: Path, level: str) -> None:
    lab = make_lab(tmp_path)
    before = lab.main_commit()
    bad = evil_commit(lab)
    tree = lab.export_tree(before, lab.state_dir / "jobs" / "0001")  # inside the lab, even
    train = (f"import os, subprocess\nr = subprocess.run(['git', '-C', {str(lab.root)!r}, "
             f"'update-ref', 'refs/heads/main', {bad!r}])\nprint('GIT EXIT', r.returncode)\n"
             "open(os.path.join(os.environ['AUTOLAB_OUTPUT_DIR'], 'model.txt'), 'w')"
             ".write('1.5')\n")
    (tree / "train.py").write_text(train)
    spec = {"experiment_id": "0001", "train": ["python", "train.py"],
            "eval": ["python", "evaluate.py"], "metric": "val_loss",
            "protected": ["evaluate.py"], "eval_hash": hash_paths(tree, ["evaluate.py"]),
            "protected_data": ["data/*.txt"], "protected_data_hash": Pins(lab).data_hash(),
            "isolation": level, "hide": [str(lab.root)], "env": {}}
    code, out = run_job(tree, spec, new_key())
    assert code == 0, out
    assert "GIT EXIT 0" not in out and lab.main_commit() == before


def test_protected_files_and_data_are_pinned_at_init(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    pins = Pins(lab)
    assert pins.path.exists()
    pins.verify()
    assert pins.data_hash() == hash_globs(lab.root, ["data/*.txt"])
    (lab.root / "data" / "val.txt").write_text("2.0")
    with pytest.raises(LabError, match=r"data/val\.txt \(changed\)"):
        pins.verify()
    (lab.root / "data" / "val.txt").write_text("3.0")
    (lab.root / "data" / "extra.txt").write_text("1")
    with pytest.raises(LabError, match=r"data/extra\.txt \(new\)"):
        pins.verify()
    (lab.root / "data" / "extra.txt").unlink()
    lab.update_main({"evaluate.py": "print('changed')\n"}, "change the evaluation")
    with pytest.raises(LabError, match=r"evaluate\.py \(changed\).*re-pin"):
        pins.verify()
    pins.pin()  # a deliberate change, re-pinned
    pins.verify()


@pytest.mark.parametrize("level", LEVELS)
def test_a_run_from_lab_to_signed_result(tmp_path: Path, level: str) -> None:
    """What the loop does: spec and key from the lab, an exported tree, the key on stdin, and
    the one signed result parsed back. A sandboxed job cannot read the lab's master key."""
    lab = make_lab(tmp_path)
    steal = ("import os\ntry:\n    print('MASTER', open(os.environ['MASTER']).read())\n"
             "except OSError:\n    print('MASTER unreadable')\n"
             "open(os.path.join(os.environ['AUTOLAB_OUTPUT_DIR'], 'model.txt'), 'w').write('2')\n")
    branch = f"{BRANCH_PREFIX}0001"
    commit = lab.create_branch(branch, lab.main_commit(), {"train.py": steal}, "patch")
    tree = lab.export_tree(commit, lab.state_dir / "jobs" / "0001")
    spec = run_spec(lab, "0001", lab.main_commit(), seed=4, attempt=2, isolation=level)
    assert spec.hide == [str(lab.root)] and spec.protected_data_hash
    master = lab.state_dir / "result-key"
    spec = RunSpec.from_dict({**spec.to_dict(), "env": {"MASTER": str(master)}})
    key = run_key(lab, "0001", 2)
    assert key != run_key(lab, "0001", 1) and oct(master.stat().st_mode)[-3:] == "600"
    code, out = run_job(tree, spec.to_dict(), key, how="stdin")
    assert code == 0, out
    result = parse_result(out, key, "0001")
    assert result.value == pytest.approx(6.0) and result.attempt == 2 and result.isolation == level
    if level != "none":
        assert "MASTER unreadable" in out
    with pytest.raises(ResultError):  # an earlier attempt's key does not accept it
        parse_result(out, run_key(lab, "0001", 1))

"""Lab state on real git repositories: init, experiment branches, records, promotion, and
concurrent writers."""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import pytest

from autolab_core.errors import ConfigError, LabError
from autolab_core.lab import BRANCH_PREFIX, RECORDS, Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, Result
from autolab_core.scores import parse_scores

TRAIN = "LR = 0.01  # learning rate\nprint('val_bpb: 1.0')\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout


def make_lab(tmp_path: Path) -> Lab:
    root = tmp_path / "lab"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    return Lab.init(root)


def experiment(lab: Lab, exp_id: str, value: float | None = None) -> Experiment:
    exp = Experiment(id=exp_id, hypothesis=Hypothesis(id="h", title=f"idea {exp_id}"),
                     base_commit=lab.main_commit(), branch=f"{BRANCH_PREFIX}{exp_id}")
    exp = exp.with_status(ExperimentStatus.QUEUED)
    if value is not None:
        exp = exp.with_status(ExperimentStatus.FINISHED)
        exp = Experiment.from_dict({**_d(exp), "result": {"metric": "val_bpb", "value": value}})
    return exp


def _d(exp: Experiment) -> dict:
    from autolab_core.models import to_dict

    return to_dict(exp)


def test_init_commits_config_on_main_and_ignores_state(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    assert git(lab.root, "branch", "--show-current").strip() == "main"
    tracked = git(lab.root, "ls-files").split()
    assert {"autolab.toml", "train.py", ".gitignore"} <= set(tracked)
    assert ".autolab/" in (lab.root / ".gitignore").read_text()
    assert lab.config.metric.name == "val_bpb"
    # A second init is harmless and keeps history.
    before = lab.main_commit()
    Lab.init(lab.root)
    assert lab.main_commit() == before


def test_init_existing_repo_on_other_branch(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(root)], check=True)
    (root / "train.py").write_text(TRAIN)
    git(root, "add", "train.py")
    git(root, "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-qm", "mine")
    Lab.init(root)
    assert git(root, "branch", "--show-current").strip() == "main"
    assert "mine" in git(root, "log", "--format=%s", "main")


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"unknown key 'workerz'.*valid keys"):
        Lab.init(root, config_text='[run]\nworkerz = 2\n')


def test_experiment_branch_has_exactly_one_commit(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    base = lab.main_commit()
    commit = lab.create_branch(f"{BRANCH_PREFIX}0001", base, {"train.py": TRAIN.replace("0.01", "0.02")},
                               "exp 0001")
    assert git(lab.root, "rev-list", "--count", f"{base}..{BRANCH_PREFIX}0001").strip() == "1"
    assert git(lab.root, "rev-parse", f"{commit}^").strip() == base
    assert "LR = 0.02" in lab.read(commit, "train.py")
    assert "LR = 0.01" in (lab.root / "train.py").read_text()  # the checkout is untouched
    with pytest.raises(LabError, match="already exists"):
        lab.create_branch(f"{BRANCH_PREFIX}0001", base, {"train.py": "x = 1\n"}, "again")


def test_records_and_promotion_on_main(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    exp = experiment(lab, "0001", value=2.5)
    lab.record_on_main([exp], "record 0001")
    rows = parse_scores(lab.read(lab.main_commit(), f"{RECORDS}/scores.tsv"))
    assert [r["id"] for r in rows] == ["0001"] and rows[0]["value"] == "2.5"
    assert (lab.root / RECORDS / "experiments" / "0001.json").exists()  # checkout followed

    code_paths = ["train.py"]
    code = lab.files_hash(lab.main_commit(), code_paths)
    new = TRAIN.replace("0.01", "0.02")
    lab.record_on_main([experiment(lab, "0002", 2.4)], "promote 0002: LR x2",
                       extra_files={"train.py": new}, expect_code=(code_paths, code))
    assert "LR = 0.02" in lab.read(lab.main_commit(), "train.py")
    assert "promote 0002" in git(lab.root, "log", "-1", "--format=%s", "main")
    assert [r["id"] for r in lab.scores()] == ["0001", "0002"]
    # A promotion based on code that has moved on is refused.
    with pytest.raises(LabError, match="changed"):
        lab.update_main({"train.py": "LR = 1\n"}, "stale", expect_code=(code_paths, code))


def test_experiment_state_round_trip(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    exp = experiment(lab, lab.new_experiment_id(), 1.5)
    exp = Experiment.from_dict({**_d(exp), "result": _d(Result("val_bpb", 1.5, seed=2))})
    lab.save_experiment(exp)
    again = Lab(lab.root).load_experiments()
    assert again == [exp]
    assert lab.new_experiment_id() == "0002"


def _writer(root: str, worker: int, n: int) -> None:
    lab = Lab(root)
    for i in range(n):
        exp_id = f"{worker}{i:03d}"
        lab.record_on_main([experiment(lab, exp_id, float(i))], f"record {exp_id}")
        lab.create_branch(f"{BRANCH_PREFIX}{exp_id}", lab.main_commit(), {"train.py": f"LR = {i}\n"},
                          f"exp {exp_id}")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    start = int(git(lab.root, "rev-list", "--count", "main"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(lab.root), w, 8)) for w in range(1, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ids = sorted(r["id"] for r in lab.scores())
    assert ids == sorted(f"{w}{i:03d}" for w in range(1, 5) for i in range(8))
    assert int(git(lab.root, "rev-list", "--count", "main")) == start + 32
    branches = git(lab.root, "branch", "--list", f"{BRANCH_PREFIX}*").split()
    assert len(branches) == 32
    assert git(lab.root, "status", "--porcelain").strip() == ""  # checkout kept in sync

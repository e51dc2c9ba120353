"""Issue 12's loop-side behaviour through the real command line on real git labs (the toy lab of
tests/toylab.py, the real local backend and runner): the seed warning in the run and in
``status``, error tails, the retry of failed baselines, a deleted ``.autolab/``, ``[run] python``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import attrs
from toylab import TRAIN, make_toy_lab

from autolab.lab_probe import probe
from autolab.run.jobs import run_spec
from autolab.run.ledger import Ledger
from autolab.run.smoke import smoke_run_here
from autolab_core.lab import RECORDS, Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, to_dict
from autolab_core.vocab import Role

MISSING = "autolab_test_missing_dep"  # a module the lab imports that the environment lacks
SECRET = "hf_wiring0test0secret0value0123"


def autolab(lab: Lab, *args: str, extra_path: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_TOKEN": SECRET, "COLUMNS": "200"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "autolab", *args, "--lab", str(lab.root)],
                          env=env, capture_output=True, text=True, timeout=600)


def flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def records(lab: Lab) -> list[Experiment]:
    """The experiment records committed to main."""
    tree = lab.repo.commit("main").tree / RECORDS / "experiments"
    return [Experiment.from_dict(json.loads(b.data_stream.read())) for b in tree.blobs]


def broken_lab(root: Path) -> Lab:
    """A toy lab whose main needs a module the environment lacks; it prints a secret first."""
    root.mkdir(parents=True)
    lab = make_toy_lab(root)
    train = TRAIN.replace("LR = 0.01", f"print('token {SECRET}')\nimport {MISSING}\nLR = 0.01")
    (root / "train.py").write_text(train)
    lab.repo.git.add("train.py")
    lab.repo.git.commit("-m", "needs a module")
    return Lab(root)


def fixed_env(tmp_path: Path) -> Path:
    """The environment "fixed": the missing module installed on PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{MISSING}.py").write_text("")
    return site


def test_identical_baselines_are_warned_about_in_the_run_and_in_status(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab", noise=0.0)  # the seed changes nothing
    run = autolab(lab, "run", "-n", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    said = flat(run.stdout)
    # Printed once, with the config names rich would otherwise read as markup.
    assert said.count("baseline runs of unchanged main gave the same val_bpb") == 1, run.stdout
    assert "[promotion] min_sigma = 0.005 is used instead" in said
    assert "$AUTOLAB_SEED" in said and "{seed} in [run] command" in said
    status = autolab(lab, "status")
    assert status.returncode == 0, status.stderr
    assert "seeds: 3 baselines of main gave the same val_bpb" in flat(status.stdout)


def test_baselines_that_differ_get_no_seed_warning(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab", noise=0.01)
    run = autolab(lab, "run", "-n", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gave the same" not in run.stdout
    assert "seeds:" not in autolab(lab, "status").stdout


def test_a_failed_run_shows_its_cause_and_main_is_retried_once_fixed(tmp_path: Path) -> None:
    lab = broken_lab(tmp_path / "lab")
    first = autolab(lab, "run", "-n", "1")
    assert first.returncode != 0
    said = flat(first.stdout + first.stderr)
    assert "main itself fails to run" in said
    cause = f"ModuleNotFoundError: No module named '{MISSING}'"
    assert cause in said, said  # in the console, not only in a log file
    assert SECRET not in first.stdout + first.stderr and "token ***" in said
    # A failed baseline is replaced until noise_runs of them failed in this session.
    failed = [r for r in records(lab) if r.status is ExperimentStatus.FAILED]
    assert len(failed) >= 3 and all(cause in (r.reason or "") for r in failed)
    assert all(SECRET not in json.dumps(to_dict(r)) for r in records(lab))
    status = autolab(lab, "status")
    assert cause in flat(status.stdout) and f"failed ({len(failed)}" in status.stdout

    # The environment is fixed: the next run retries main instead of stopping at once.
    second = autolab(lab, "run", "-n", "1", extra_path=fixed_env(tmp_path))
    assert second.returncode == 0, second.stdout + second.stderr
    baselines = [r for r in records(lab) if r.role == Role.BASELINE]
    # The earlier failures are kept in the records (with any run the first session left
    # behind, which ended in the old environment); main is measured again.
    assert {r.id for r in failed} <= {r.id for r in baselines if r.status is ExperimentStatus.FAILED}
    assert len([r for r in baselines if r.status is ExperimentStatus.FINISHED]) == 3


def test_a_deleted_state_folder_is_rebuilt_with_a_note(tmp_path: Path) -> None:
    lab = broken_lab(tmp_path / "lab")
    first = autolab(lab, "run", "-n", "1")
    assert "main itself fails to run" in flat(first.stdout + first.stderr)
    assert any((lab.root / ".autolab" / "jobs").iterdir())  # failed runs keep their trees
    shutil.rmtree(lab.root / ".autolab")

    second = autolab(lab, "run", "-n", "1", extra_path=fixed_env(tmp_path))
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "Traceback" not in out and "GitCommandError" not in out
    said = flat(out)
    # Jobs run in exported trees (no git worktrees), so there is no registration to prune.
    assert "worktree registration" not in said
    assert re.search(r"note: rebuilt [3-9] experiment record\(s\) in \.autolab/", said), said
    finished = [r for r in records(lab) if r.status is ExperimentStatus.FINISHED]
    assert len([r for r in finished if r.role == Role.BASELINE]) == 3
    assert len([r for r in records(lab) if r.status is ExperimentStatus.FAILED]) >= 3


def fake_interpreter(tmp_path: Path) -> tuple[Path, Path]:
    """A venv-like ``bin/python`` that notes each use, then runs this interpreter."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    marker = tmp_path / "used"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return python, marker


def test_run_python_names_the_interpreter_of_the_labs_commands(tmp_path: Path) -> None:
    python, marker = fake_interpreter(tmp_path)
    lab = make_toy_lab(tmp_path / "lab")
    text = (lab.root / "autolab.toml").read_text().replace(
        'time_limit = "2m"', f'time_limit = "2m"\npython = "{python}"')
    text = text.replace('focus = ["LR"]', 'focus = ["LR"]\nsmoke = "always"\nsmoke_seconds = 60')
    (lab.root / "autolab.toml").write_text(text)
    lab.repo.git.commit("-am", "use the venv's python")
    lab = Lab(lab.root)
    assert lab.config.run.python_dir() == str(python.parent)

    # The local smoke run and the init probe run `python` from that interpreter's folder.
    ledger = Ledger(lab, say=print)
    exp = ledger.new(Hypothesis(id="h", title="main"), Role.CANDIDATE)
    assert smoke_run_here(lab, exp, lab.main_commit()) is None
    assert marker.read_text().splitlines() == ["train.py"]
    result = probe(lab.root, ["python", "train.py"], 60, python=str(python))
    assert result.returncode == 0 and marker.read_text().splitlines() == ["train.py"] * 2
    # Jobs: the runner is told which interpreter to put first on PATH.
    exp = attrs.evolve(exp, base_commit=lab.main_commit())
    assert run_spec(lab, exp).python == str(python)
    other = make_toy_lab(tmp_path / "other")
    assert run_spec(other, attrs.evolve(exp, base_commit=other.main_commit())).python is None


def test_a_run_python_that_does_not_exist_is_refused_with_the_fix(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    text = (lab.root / "autolab.toml").read_text().replace(
        'time_limit = "2m"', 'time_limit = "2m"\npython = "/no/such/venv/bin/python"')
    (lab.root / "autolab.toml").write_text(text)
    run = autolab(lab, "run", "-n", "1")
    assert run.returncode != 0
    said = flat(run.stdout + run.stderr)
    assert "[run] python = '/no/such/venv/bin/python' is not an executable file" in said, said
    assert "give the interpreter's full path" in said and "Traceback" not in said


def test_jobs_get_the_seed_in_every_documented_variable_and_on_the_command_line(
        tmp_path: Path) -> None:
    """``{seed}`` in ``[run] command`` and ``AUTOLAB_SEED_DATA``/``_INIT`` carry the run's
    seed; the training script exits 1 unless all agree, so the three baselines finishing with
    seeds 0, 1, 2 shows each job got its own seed everywhere."""
    lab = make_toy_lab(tmp_path / "lab")
    check = ('import sys\nassert sys.argv[1:] == ["--seed", os.environ["AUTOLAB_SEED"]], sys.argv\n'
             'assert os.environ["AUTOLAB_SEED_DATA"] == os.environ["AUTOLAB_SEED_INIT"] == '
             'sys.argv[2]\n')
    (lab.root / "train.py").write_text(TRAIN.replace("LR = 0.01", check + "LR = 0.01"))
    text = (lab.root / "autolab.toml").read_text().replace(
        'command = "python train.py"', 'command = "python train.py --seed {seed}"')
    (lab.root / "autolab.toml").write_text(text)
    lab.repo.git.commit("-am", "take the seed as an argument")
    run = autolab(Lab(lab.root), "run", "-n", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    baselines = [r for r in records(lab) if r.role == Role.BASELINE]
    assert sorted(r.seed for r in baselines if r.status is ExperimentStatus.FINISHED) == [0, 1, 2]

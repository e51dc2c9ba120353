"""The trust runner wired into the loop (issue 11): the result key travels only on the job's
stdin (or, for backends that cannot pass stdin, as a secret env), never into a record or a
file the job can read; results carry their isolation level and CPU per phase; the pins of the
evaluation data are checked before scoring. Real git lab (tests/toylab.py), real local
backend, real runner."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from toylab import TRAIN, make_toy_lab

from autolab.run.assemble import build_loop
from autolab.run.jobs import Jobs, parse_output
from autolab.run.loop import RunOptions
from autolab_core import guard
from autolab_core.job import RunResult, format_signed_result
from autolab_core.lab import RECORDS, Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis
from autolab_core.runner import KEY_ENV
from autolab_core.secrets import looks_secret


def quiet(msg: str) -> None:
    print(msg)


def test_the_key_reaches_the_runner_on_stdin_and_never_a_file(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    loop = build_loop(lab, RunOptions(workers=2, poll_interval=0.05, max_experiments=1),
                      say=quiet)
    exps = [e for e in loop.run() if e.attempts]
    finished = [e for e in exps if e.status is ExperimentStatus.FINISHED]
    assert finished
    keys = {guard.run_key(lab, e.id, e.attempts).decode() for e in exps}
    # Not in the local backend's job files (spec.json, handle.json, logs)...
    job_files = [p for p in (lab.state_dir / "plugins" / "local").rglob("*") if p.is_file()]
    assert job_files
    for path in job_files:
        text = path.read_text(errors="replace")
        assert not any(k in text for k in keys), path
    spec = json.loads(next((lab.state_dir / "plugins" / "local" / "jobs").glob("*/spec.json"))
                      .read_text())
    assert "stdin" not in spec and KEY_ENV not in spec["env"]
    assert spec["command"][-1] == "--key-stdin" and "AUTOLAB_RESULT_NONCE" not in spec["env"]
    # ... nor in the records, in .autolab/experiments or on main.
    for path in (lab.state_dir / "experiments").glob("*.json"):
        text = path.read_text()
        assert "nonce" not in json.loads(text) and not any(k in text for k in keys)
    on_main = subprocess.run(["git", "-C", str(lab.root), "grep", "-c", "-e", "nonce",
                              "main", "--", RECORDS], capture_output=True, text=True)
    assert on_main.stdout == ""
    # Every result: its isolation level, training and evaluation CPU seconds.
    for e in finished:
        assert e.hardware["isolation"] in ("bwrap", "landlock", "none")
        assert e.result is not None and e.result.extra["train_cpu_seconds"] >= 0
        assert "eval_cpu_seconds" in e.result.extra


def test_an_old_record_with_a_nonce_still_loads(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    path = lab.state_dir / "experiments" / "0001.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = {"id": "0001", "hypothesis": {"id": "h", "title": "old"}, "base_commit": "c", "branch": "b",
           "nonce": "5f3a9c"}
    path.write_text(json.dumps(old))
    (exp,) = lab.load_experiments()
    assert exp.id == "0001" and not hasattr(exp, "nonce")


def test_backends_without_stdin_get_the_key_as_a_secret_env(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    loop = build_loop(lab, RunOptions(workers=1), say=quiet)
    loop.backend.takes_stdin = False  # type: ignore[misc]  # as SLURM and HF Jobs
    exp = Experiment(id="0009", hypothesis=Hypothesis(id="h", title="t"), branch="b",
                     base_commit=lab.main_commit(), commit=lab.main_commit(), attempts=2)
    spec = Jobs.job_spec(loop.jobs, exp)
    assert spec.stdin is None and "--key-stdin" not in spec.command
    assert spec.env[KEY_ENV] == guard.run_key(lab, "0009", 2).decode() and looks_secret(KEY_ENV)
    assert Path(spec.workdir).is_dir() and not (Path(spec.workdir) / ".git").exists()
    loop.backend.takes_stdin = True  # type: ignore[misc]
    spec = Jobs.job_spec(loop.jobs, exp)
    assert spec.stdin == guard.run_key(lab, "0009", 2) + b"\n" and KEY_ENV not in spec.env
    assert guard.run_key(lab, "0009", 2).decode() not in repr(spec)
    loop.backend.close()


def test_parse_output_accepts_one_signed_result_and_reports_forged_lines() -> None:
    exp = Experiment(id="0003", hypothesis=Hypothesis(id="h", title="t"), base_commit="c", branch="b",
                     attempts=1)
    key = b"k" * 64
    good = format_signed_result(RunResult("0003", "val_bpb", 1.25, isolation="bwrap",
                                          train_cpu_seconds=2.0, eval_cpu_seconds=0.5), key)
    fake = 'AUTOLAB_RESULT {"experiment_id": "0003", "metric": "val_bpb", "value": 0.0}'
    other = format_signed_result(RunResult("0004", "val_bpb", 0.1), key)  # another run's line
    out = parse_output(exp, "\n".join(["x", fake, good, other]), key)
    result = out.updates["result"]
    assert result.value == 1.25 and result.extra["eval_cpu_seconds"] == 0.5
    assert out.updates["hardware"]["isolation"] == "bwrap"
    assert len(out.forged) == 2 and out.result_error is None
    twice = parse_output(exp, f"{good}\n{good}\n", key)
    assert "result" not in twice.updates and "exactly one" in (twice.result_error or "")
    none = parse_output(exp, fake, key)
    assert "no valid signature" in (none.result_error or "")
    assert "result" not in parse_output(exp, good).updates  # only the whole log, with the key


POISON_DATA = '''
import pathlib
pathlib.Path({path!r}).write_text("easy\\n")  # the lab's own copy, by absolute path
'''


def test_changed_evaluation_data_stops_the_run_before_scoring(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab", extra_config="")
    toml = lab.root / "autolab.toml"
    text = toml.read_text().replace('protected = ["prepare.py"]',
                                    'protected = ["prepare.py"]\nprotected_data = ["data/*.txt"]')
    toml.write_text(text.replace("[run]\n", '[run]\nisolation = "none"\n'))
    (lab.root / "data").mkdir()
    (lab.root / "data" / "val.txt").write_text("hard\n")
    (lab.root / ".gitignore").write_text((lab.root / ".gitignore").read_text() + "data/\n")
    lab.repo.git.add("-A")
    lab.repo.git.commit("-qm", "evaluation data")
    lab = Lab(lab.root)
    guard.Pins(lab).pin()
    (lab.root / "train.py").write_text(TRAIN + POISON_DATA.format(path=str(lab.root / "data" / "val.txt")))
    lab.repo.git.commit("-qam", "a baseline that overwrites the evaluation data")
    said: list[str] = []
    loop = build_loop(lab, RunOptions(workers=1, poll_interval=0.05, max_experiments=1),
                      say=said.append)
    with pytest.raises(Exception, match=r"ALERT: protected evaluation files changed.*data/val.txt"):
        loop.run()
    assert any("ALERT" in line for line in said)
    assert not [e for e in lab.load_experiments() if e.verdict == "promoted"]


def test_a_run_identical_to_another_seed_of_the_same_code_ignores_the_seed() -> None:
    from autolab.seed_check import ignored_seed
    from autolab_core.models import Result

    def run(i: str, role: str, seed: int, value: float, code: str = "cand") -> Experiment:
        return Experiment(id=i, hypothesis=Hypothesis(id="h", title="t"), base_commit="c",
                          branch="b", role=role, seed=seed, code_hash=code, base_code="main",
                          result=Result("val_bpb", value))

    base = [run("b0", "baseline", 0, 1.0, "main"), run("b1", "baseline", 1, 1.01, "main")]
    cand = run("c", "candidate", 0, 0.9)
    fixed = run("k", "confirm", 3, 0.9)
    why = ignored_seed(fixed, [*base, cand, fixed])
    assert why is not None and "run c on seed 0" in why and "ignores the seed" in why
    assert ignored_seed(run("k", "confirm", 3, 0.9001), [*base, cand]) is None  # it varies
    assert ignored_seed(run("k", "confirm", 0, 0.9), [*base, cand]) is None  # same seed
    # A lab whose main gives the same number on every seed: nothing to tell a patch from it.
    flat = [run("b0", "baseline", 0, 1.0, "main"), run("b1", "baseline", 1, 1.0, "main")]
    assert ignored_seed(fixed, [*flat, cand, fixed]) is None


def test_the_in_memory_backend_signs_results_with_the_job_key() -> None:
    from autolab_core.job import parse_result
    from autolab_core.models import JobSpec
    from autolab_core.testing import ScriptedRun

    key = b"0123456789abcdef" * 4
    run = ScriptedRun(result={"metric": "val_loss", "value": 1.9})
    piped = JobSpec("e1", ("x",), ".", stdin=key + b"\n")
    assert parse_result(run.log_text(piped), key, "e1").value == 1.9
    in_env = JobSpec("e1", ("x",), ".", env={KEY_ENV: key.decode()})
    assert parse_result(run.log_text(in_env), key, "e1").value == 1.9

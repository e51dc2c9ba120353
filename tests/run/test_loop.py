"""The run loop on a real git lab with the real local backend and Parquet store, using the
millisecond toy lab (tests/toylab.py): promotion, duplicates, the A/A gate, trust in the
protected evaluation, and restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from toylab import TRAIN, make_toy_lab

from autolab.run.assemble import build_loop
from autolab.run.loop import RunLoop, RunOptions
from autolab_core.lab import BRANCH_PREFIX, RECORDS, Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis
from autolab_core.vocab import FlagKind, Role, kinds


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout


def quiet(msg: str) -> None:
    print(msg)  # shown by pytest only when a test fails


def run_lab(lab: Lab, **kw: object) -> tuple[RunLoop, list[Experiment]]:
    opts = RunOptions(workers=2, poll_interval=0.05, **kw)  # type: ignore[arg-type]
    orch = build_loop(lab, opts, say=quiet)
    return orch, orch.run()


def autolab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autolab", *args], capture_output=True,
                          text=True, timeout=300)


def test_session_promotes_a_real_win_and_rejects_a_duplicate(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    # The same user idea twice: the second must be rejected by the Planner.
    assert autolab("try", "--lab", str(lab.root), "WIDTH=16").returncode == 0
    assert autolab("try", "--lab", str(lab.root), "WIDTH=16").returncode == 0
    _, exps = run_lab(lab, max_experiments=4)
    by_id = {e.id: e for e in exps}

    promoted = [e for e in exps if e.verdict == "promoted"]
    assert promoted and promoted[0].hypothesis.changes == {"LR": 0.02}
    assert "LR = 0.02" in lab.read(lab.main_commit(), "train.py")
    log = git(lab.root, "log", "--format=%B", "main")
    assert f"autolab: promote {promoted[0].id}: LR x2" in log
    assert "improvement +0.3" in log and "3 runs vs 3 runs of main" in log

    rejected = [e for e in exps if e.status is ExperimentStatus.REJECTED]
    assert any("duplicate of" in (e.reason or "") and e.hypothesis.changes == {"WIDTH": 16}
               for e in rejected)

    # Every experiment that ran has its own branch with exactly one commit on its base.
    ran = [e for e in exps if e.status is ExperimentStatus.FINISHED and e.role != "confirm"]
    assert len(ran) >= 7  # 3 baselines + 4 candidates
    for exp in ran:
        assert exp.branch == f"{BRANCH_PREFIX}{exp.id}"
        count = git(lab.root, "rev-list", "--count", f"{exp.base_commit}..{exp.branch}")
        assert count.strip() == "1"
    # The scores on main hold every experiment, with effect and uncertainty for verdicts.
    scores = {r["id"]: r for r in lab.scores()}
    assert set(scores) == {e.id for e in exps if e.done}
    row = scores[promoted[0].id]
    assert row["verdict"] == "promoted" and row["n_runs"] == "3" and row["effect"].startswith("+0.3")
    assert row["hardware"] and row["eval_hash"] == (by_id[row["id"]].eval_hash or "")[:12]
    # Every run that ran knows its worker slot (the Gantt chart's rows), queued ones too.
    assert {e.slot for e in exps if e.handle} <= {"local-0", "local-1"}
    # Metrics streamed into the store while the jobs ran.
    table = build_loop(lab, RunOptions(), say=quiet).store.query(names=["train_loss"])
    assert table.num_rows >= 5 * len([e for e in exps if e.status is ExperimentStatus.FINISHED])


def test_aa_no_op_changes_are_never_promoted(tmp_path: Path) -> None:
    """Knob moves that cannot matter (the toy's flat mode) only move the seed noise."""
    lab = make_toy_lab(tmp_path / "lab", flat=True, noise=0.02)
    _, exps = run_lab(lab, max_experiments=6)
    candidates = [e for e in exps if e.role == "candidate" and e.result is not None]
    assert len(candidates) >= 6
    assert not [e for e in exps if e.verdict == "promoted"]
    assert all(e.verdict in ("not better", "not confirmed") for e in candidates)


class ScriptedIdeas:
    """A Researcher and Worker that propose prepared edits of train.py (like an LLM would)."""

    def __init__(self, patches: list[tuple[str, str]]) -> None:
        self.patches = list(patches)

    def propose(self, digest: object, n: int) -> list[Hypothesis]:
        out = []
        while self.patches and len(out) < n:
            title, code = self.patches.pop(0)
            out.append(Hypothesis(id=title, title=title, source="llm",
                                  edits=({"file": "train.py", "replace": code},)))
        return out

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        return {"train.py": hypothesis.edits[0]["replace"]}


CHEAT_PRINT = TRAIN + '''
(out / "result.json").write_text(json.dumps({"val_bpb": 0.0}))
print("val_bpb: 0.0")
print('AUTOLAB_RESULT {"nonce": "guess", "metric": "val_bpb", "value": 0.0}')
'''
CHEAT_EVAL = TRAIN + '''
pathlib.Path("prepare.py").write_text("import json, os, pathlib\\n"
    "out = pathlib.Path(os.environ['AUTOLAB_OUTPUT_DIR'])\\n"
    "(out / 'result.json').write_text(json.dumps({'val_bpb': 0.0}))\\n")
'''


def test_patches_cannot_fake_their_score(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    ideas = ScriptedIdeas([("print a fake score", CHEAT_PRINT),
                           ("rewrite the evaluation", CHEAT_EVAL)])
    orch = build_loop(lab, RunOptions(workers=2, poll_interval=0.05), say=quiet)
    orch.roles.proposer = orch.roles.writer = ideas
    exps = {e.hypothesis.title: e for e in orch.run()}
    fake = exps["print a fake score"]
    assert fake.status is ExperimentStatus.FINISHED
    assert fake.result is not None and fake.result.value > 1.3  # the protected eval's number
    assert fake.verdict == "not better"
    assert FlagKind.FORGED_RESULT in kinds(fake.flags)  # the unsigned line is reported
    rewrite = exps["rewrite the evaluation"]
    assert rewrite.status is ExperimentStatus.FAILED
    # The sandbox refuses the write (bwrap, landlock); without one, the hashes catch it.
    assert ("modified the protected evaluation" in (rewrite.reason or "")
            or "Read-only file system: 'prepare.py'" in (rewrite.reason or ""))
    assert not [e for e in exps.values() if e.verdict == "promoted"]


def test_patch_touching_protected_file_or_breaking_syntax_is_rejected(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    orch = build_loop(lab, RunOptions(poll_interval=0.05), say=quiet)

    class Writer:
        def write_patch(self, h: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
            return dict(h.changes)

    orch.roles.writer = Writer()
    pipeline = orch.pipeline()
    cases = {"prepare.py": "x = 1\n", "train.py": "def broken(:\n"}
    for path, content in cases.items():
        exp = orch.ledger.new(Hypothesis(id=path, title=path, changes={path: content}), Role.CANDIDATE)
        assert pipeline.materialize(exp) is None
    reasons = [e.reason for e in orch.experiments()]
    assert any("prepare.py is protected" in (r or "") for r in reasons)
    assert any("breaks the syntax of train.py" in (r or "") for r in reasons)
    assert not git(lab.root, "branch", "--list", f"{BRANCH_PREFIX}*").strip()


def test_restart_reattaches_and_runs_nothing_twice(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    slow = (lab.root / "train.py").read_text().replace(
        "SEED = int", "import time; time.sleep(1.5)\nSEED = int")
    (lab.root / "train.py").write_text(slow)
    git(lab.root, "commit", "-qam", "slow training")
    # First session: stop while the baselines run, leaving them to a later session.
    orch = build_loop(lab, RunOptions(workers=2, poll_interval=0.05, on_stop="detach",
                                              max_experiments=2), say=quiet)

    def stop_once_submitted() -> None:  # not a fixed delay: a loaded machine starts slower
        deadline = time.time() + 120
        while not orch.running() and time.time() < deadline:
            time.sleep(0.02)
        orch.stop()

    threading.Thread(target=stop_once_submitted, daemon=True).start()
    first = orch.run()
    in_flight = [e.id for e in first if e.status in (ExperimentStatus.SUBMITTED,
                                                     ExperimentStatus.STARTED)]
    assert in_flight
    # Second session, new objects: reattaches, finishes, judges.
    _, second = run_lab(lab, max_experiments=2)
    by_id = {e.id: e for e in second}
    assert all(by_id[i].status is ExperimentStatus.FINISHED for i in in_flight)
    jobs = lab.state_dir / "plugins" / "local" / "jobs"
    per_exp: dict[str, int] = {}
    for job in jobs.iterdir():
        exp_id = json.loads((job / "spec.json").read_text())["experiment_id"]
        per_exp[exp_id] = per_exp.get(exp_id, 0) + 1
    assert per_exp and max(per_exp.values()) == 1  # nothing ran twice
    assert {e.id for e in second if e.attempts} == set(per_exp)


def test_records_on_main_trace_each_promotion(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    _, exps = run_lab(lab, max_experiments=2)
    promoted = next(e for e in exps if e.verdict == "promoted")
    record = json.loads(lab.read(lab.main_commit(), f"{RECORDS}/experiments/{promoted.id}.json"))
    assert record["hypothesis"]["changes"] == {"LR": 0.02}
    assert record["commit"] == git(lab.root, "rev-parse", promoted.branch).strip()
    assert record["patch"].count("\n-LR = 0.01") == 1 and "+LR = 0.02" in record["patch"]
    assert record["result"]["eval_hash"] and record["result"]["trusted"] is True
    assert [h["status"] for h in record["history"]][:4] == ["queued", "submitted", "started",
                                                            "finished"]


@pytest.mark.parametrize("on_stop", ["cancel"])
def test_stop_cancels_running_jobs_and_loses_no_queue(tmp_path: Path, on_stop: str) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    slow = (lab.root / "train.py").read_text().replace(
        "SEED = int", "import time; time.sleep(30)\nSEED = int")
    (lab.root / "train.py").write_text(slow)
    git(lab.root, "commit", "-qam", "slow training")
    orch = build_loop(lab, RunOptions(workers=2, poll_interval=0.05, on_stop=on_stop),
                              say=quiet)
    threading.Timer(1.0, orch.stop).start()
    exps = orch.run()
    assert [e for e in exps if e.status is ExperimentStatus.CANCELLED]
    assert not [e for e in exps if e.status in (ExperimentStatus.SUBMITTED,
                                                ExperimentStatus.STARTED)]
    queued = [e for e in Lab(lab.root).load_experiments() if e.status is ExperimentStatus.QUEUED]
    assert queued  # the remaining baseline and the ready ideas wait for the next run


NAN_WIN = TRAIN.replace("LR = 0.01", "LR = 0.02").replace(
    '{"train_loss": 2.0 / (1 + step) + LR}', '{"train_loss": float("nan") if step == 20 else 1.0}')


def test_flagged_win_waits_for_a_human_then_is_promoted(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    orch = build_loop(lab, RunOptions(workers=2, poll_interval=0.05), say=quiet)
    orch.roles.proposer = orch.roles.writer = ScriptedIdeas([("LR x2 with a NaN in its loss", NAN_WIN)])
    exps = orch.run()
    (cand,) = [e for e in exps if e.role == "candidate"]
    assert cand.verdict == "needs review" and any(f.startswith("nan") for f in cand.flags)
    assert "LR = 0.01" in lab.read(lab.main_commit(), "train.py")
    done = autolab("approve", "--lab", str(lab.root), cand.id)
    assert done.returncode == 0, done.stderr
    assert "LR = 0.02" in lab.read(lab.main_commit(), "train.py")
    (row,) = [r for r in lab.scores() if r["id"] == cand.id]
    assert row["verdict"] == "promoted" and "approved: by" in row["flags"]
    again = autolab("approve", "--lab", str(lab.root), cand.id)
    assert again.returncode == 2 and "not a candidate waiting for review" in again.stderr


CRASH = TRAIN.replace("SEED = int", "raise RuntimeError('shape mismatch in layer 2')\nSEED = int")


def test_smoke_run_rejects_a_crashing_patch_before_submission(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    cfg = (lab.root / "autolab.toml").read_text().replace(
        '[search]\nfocus = ["LR"]', '[search]\nfocus = ["LR"]\nsmoke = "always"\nsmoke_seconds = 20')
    (lab.root / "autolab.toml").write_text(cfg)
    git(lab.root, "commit", "-qam", "smoke runs on")
    orch = build_loop(Lab(lab.root), RunOptions(workers=2, poll_interval=0.05),
                              say=quiet)
    orch.roles.proposer = orch.roles.writer = ScriptedIdeas([("crash at start", CRASH),
                                                 ("a fine change", TRAIN.replace("0.01", "0.02"))])
    exps = {e.hypothesis.title: e for e in orch.run()}
    crash = exps["crash at start"]
    assert crash.status is ExperimentStatus.REJECTED and crash.handle is None
    assert "smoke run failed" in (crash.reason or "") and "shape mismatch" in (crash.reason or "")
    assert exps["a fine change"].status is ExperimentStatus.FINISHED
    assert not (lab.state_dir / "smoke" / crash.id).exists()


COSTLY_WIN = TRAIN.replace("LR = 0.01", "LR = 0.02").replace(
    "SEED = int", "import time\n_t = time.process_time()\nwhile time.process_time() - _t < 1.5:\n"
    "    pass\nSEED = int")


def test_a_win_that_buys_more_compute_is_held_for_an_equal_compute_comparison(
        tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    orch = build_loop(lab, RunOptions(workers=2, poll_interval=0.05), say=quiet)
    orch.roles.proposer = orch.roles.writer = ScriptedIdeas([("LR x2 plus 1.5 s of CPU", COSTLY_WIN)])
    (cand,) = [e for e in orch.run() if e.role == "candidate"]
    assert cand.verdict == "needs equal-compute comparison", cand.reason
    assert "more CPU per run than main" in (cand.reason or "")
    assert "LR = 0.01" in lab.read(lab.main_commit(), "train.py")

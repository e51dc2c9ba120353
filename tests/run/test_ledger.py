"""``autolab.run.ledger`` on a real git lab: live records, records on main, restarts."""

from __future__ import annotations

from pathlib import Path

import attrs
from runfixtures import HookLog, baselines, candidate
from toylab import make_toy_lab

from autolab.run.ledger import Ledger, open_ledger
from autolab_core.hooks import Hooks
from autolab_core.lab import RECORDS
from autolab_core.models import ExperimentStatus, Hypothesis
from autolab_core.plugins import PluginManager
from autolab_core.vocab import Flag, Role, Verdict


def test_new_experiments_start_queued_on_main_and_survive_a_restart(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    ledger = Ledger(lab, say=lambda _m: None)
    exp = ledger.new(Hypothesis(id="h", title="an idea"), Role.CANDIDATE)
    assert exp.status is ExperimentStatus.QUEUED and exp.base_commit == lab.main_commit()
    assert exp.base_code == ledger.main_code() == lab.files_hash(lab.main_commit(),
                                                                  ["prepare.py", "train.py"])
    assert ledger.get(exp.id) is None  # not saved until put
    ledger.put(exp)
    again = Ledger(lab, say=lambda _m: None)  # a new session reads the state directory
    assert again.get(exp.id) == exp
    assert ledger.new(Hypothesis(id="h2", title="next"), Role.CANDIDATE).id != exp.id


def test_ready_order_is_confirm_then_baseline_then_candidate(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    ledger = Ledger(lab, say=lambda _m: None)
    cand = ledger.put(attrs.evolve(ledger.new(Hypothesis(id="c", title="c"), Role.CANDIDATE),
                                   commit="x"))
    base = ledger.put(attrs.evolve(ledger.new(Hypothesis(id="b", title="b"), Role.BASELINE),
                                   commit="y"))
    conf = ledger.put(ledger.new(Hypothesis(id="c", title="c"), Role.CONFIRM))  # no commit yet
    ledger.put(ledger.new(Hypothesis(id="d", title="unwritten"), Role.CANDIDATE))  # not ready
    assert [e.id for e in ledger.ready()] == [conf.id, base.id, cand.id]


def test_llm_and_user_candidates_go_before_knob_fillers_which_wait_while_held(
        tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    ledger = Ledger(lab, say=lambda _m: None)

    def ready_candidate(source: str) -> str:
        h = Hypothesis(id=source, title=source, source=source)
        return ledger.put(attrs.evolve(ledger.new(h, Role.CANDIDATE), commit="x")).id

    knob, rnd, llm, user = (ready_candidate(s) for s in ("knob", "random", "llm", "user"))
    assert [e.id for e in ledger.ready()] == [llm, user, knob, rnd]
    ledger.fillers_held = True  # an LLM idea is being written: fillers wait for it
    assert [e.id for e in ledger.ready()] == [llm, user]
    ledger.fillers_held = False
    assert [e.id for e in ledger.ready()] == [llm, user, knob, rnd]


def test_rejections_and_records_are_committed_to_main_in_one_flush(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    said: list[str] = []
    ledger = Ledger(lab, say=said.append)
    before = lab.main_commit()
    rejected = ledger.reject(ledger.new(Hypothesis(id="dup", title="dup"), Role.CANDIDATE),
                             "duplicate of 0001")
    assert rejected.verdict == Verdict.REJECTED and rejected.status is ExperimentStatus.REJECTED
    assert any("rejected" in line and "duplicate of 0001" in line for line in said)
    runs = baselines(ledger, [1.0, 1.01])
    ledger.record(runs, "autolab: record baselines")
    assert lab.main_commit() == before  # queued, not committed yet
    ledger.flush_records()
    main = lab.main_commit()
    assert lab.repo.commit(main).parents[0].hexsha == before  # one commit for all three
    scores = {r["id"]: r for r in lab.scores()}
    assert set(scores) == {rejected.id, *(e.id for e in runs)}
    assert scores[rejected.id]["verdict"] == "rejected"
    assert lab.read(main, f"{RECORDS}/experiments/{runs[0].id}.json")
    ledger.flush_records()
    assert lab.main_commit() == main  # nothing pending: no empty commit


def test_sync_records_commits_what_a_crash_left_unrecorded(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    first = Ledger(lab, say=lambda _m: None)
    (run,) = baselines(first, [1.0])  # finished in the state directory; the session dies here
    assert not lab.scores()
    Ledger(lab, say=lambda _m: None).sync_records()
    (row,) = lab.scores()
    assert row["id"] == run.id and row["status"] == "finished"


def test_hooks_reach_plugins_typed(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    pm = PluginManager(load_entrypoints=False)
    log = HookLog()
    pm.register(log, name="hook-log")
    ledger = open_ledger(lab, say=lambda _m: None, plugins=pm)
    exp = candidate(ledger, 0.9)
    ledger.hooks.experiment_finished(exp)
    ledger.hooks.anomaly(exp, Flag.parse("crash: oom: CUDA out of memory"))
    assert log.calls == [("finished", {"experiment": exp.id}),
                         ("anomaly", {"experiment": exp.id, "flag": "crash_oom"})]
    Hooks(None, lab).experiment_finished(exp)  # no plugin manager: nothing, no error

"""``autolab.run.promotion`` on a real git lab, without jobs: finished runs are written to the
ledger directly, then the policy decides (screen, confirmation, promotion, holds, approval)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from runfixtures import HookLog, baselines, candidate, finished
from toylab import make_toy_lab

from autolab.run.ledger import Ledger, open_ledger
from autolab.run.promotion import Promotion, schedule_baselines
from autolab_core.errors import LabError
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus
from autolab_core.plugins import PluginManager
from autolab_core.vocab import Role, Verdict

BASE = [1.0, 1.01, 0.99]  # sigma 0.01


def setup(tmp_path: Path) -> tuple[Lab, Ledger, Promotion, HookLog]:
    lab = make_toy_lab(tmp_path / "lab")
    pm = PluginManager(load_entrypoints=False)
    log = HookLog()
    pm.register(log, name="hook-log")
    ledger = open_ledger(lab, say=print, plugins=pm)
    return lab, ledger, Promotion(ledger), log


def confirms(ledger: Ledger, cand: Experiment) -> list[Experiment]:
    return [e for e in ledger.experiments() if e.role == Role.CONFIRM and e.parent == cand.id]


def finish_confirms(ledger: Ledger, cand: Experiment, values: list[float],
                    cpu: float | None = None) -> None:
    for exp, value in zip(confirms(ledger, cand), values, strict=True):
        ledger.put(finished(exp, value, cpu))


def test_a_confirmed_win_is_promoted_to_main(tmp_path: Path) -> None:
    lab, ledger, promotion, log = setup(tmp_path)
    promotion.judge()
    baselines(ledger, BASE)
    cand = candidate(ledger, 0.80)
    promotion.judge()
    cand = ledger.get(cand.id)
    assert cand is not None and cand.verdict == Verdict.CONFIRMING
    queued = confirms(ledger, cand)
    # Fresh seeds: not main's baselines' (0, 1, 2) nor the candidate's own (0).
    assert [e.seed for e in queued] == [3, 4] and all(e.commit == cand.commit for e in queued)
    assert promotion.pending()
    promotion.judge()  # confirmations still queued: no verdict yet
    assert ledger.get(cand.id).verdict == Verdict.CONFIRMING  # type: ignore[union-attr]
    finish_confirms(ledger, cand, [0.81, 0.79])
    promotion.judge()
    done = ledger.get(cand.id)
    assert done is not None and done.verdict == Verdict.PROMOTED and done.n_runs == 3
    assert "LR = 0.02" in lab.read(lab.main_commit(), "train.py")
    message = lab.repo.commit(lab.main_commit()).message
    assert f"autolab: promote {cand.id}" in message
    assert "(seed 0)" in message and "(seed 3)" in message and "(seed 4)" in message  # recorded
    ((_, call),) = [c for c in log.calls if c[0] == "promoted"]
    assert call["commit"] == lab.main_commit() and call["improvement"] == pytest.approx(0.2)
    assert not promotion.pending()


def test_losers_are_recorded_not_better(tmp_path: Path) -> None:
    lab, ledger, promotion, _ = setup(tmp_path)
    baselines(ledger, BASE)
    cand = candidate(ledger, 1.005)
    promotion.judge()
    ledger.flush_records()
    assert ledger.get(cand.id).verdict == Verdict.NOT_BETTER  # type: ignore[union-attr]
    assert not confirms(ledger, cand)
    (row,) = [r for r in lab.scores() if r["id"] == cand.id]
    assert row["verdict"] == "not better"


def test_no_verdict_while_the_noise_is_still_being_measured(tmp_path: Path) -> None:
    _, ledger, promotion, _ = setup(tmp_path)
    baselines(ledger, BASE[:2])  # noise_runs is 3
    cand = candidate(ledger, 0.5)
    promotion.judge()
    assert ledger.get(cand.id).verdict is None  # type: ignore[union-attr]


def test_a_flagged_win_needs_review_and_a_person_approves_it(tmp_path: Path) -> None:
    lab, ledger, promotion, _ = setup(tmp_path)
    baselines(ledger, BASE)
    cand = candidate(ledger, 0.80, flags=("nan: train_loss is NaN at step 20",))
    promotion.judge()
    finish_confirms(ledger, cand, [0.81, 0.79])
    promotion.judge()
    held = ledger.get(cand.id)
    assert held is not None and held.verdict == Verdict.NEEDS_REVIEW
    assert f"autolab approve {cand.id}" in (held.reason or "")
    assert "LR = 0.01" in lab.read(lab.main_commit(), "train.py")
    # A new session with only the ledger (no backend, store or LLM) approves it.
    approved = Promotion(Ledger(Lab(lab.root), say=print)).approve(cand.id, "alice")
    assert approved.verdict == Verdict.PROMOTED and "approved: by alice" in approved.flags
    assert "LR = 0.02" in lab.read(lab.main_commit(), "train.py")
    with pytest.raises(LabError, match="not a candidate waiting for review"):
        Promotion(Ledger(Lab(lab.root), say=print)).approve(cand.id, "alice")


def test_a_win_that_costs_more_compute_is_held(tmp_path: Path) -> None:
    lab, ledger, promotion, _ = setup(tmp_path)
    baselines(ledger, BASE, cpu=2.0)
    cand = candidate(ledger, 0.80, cpu=4.0)
    promotion.judge()
    finish_confirms(ledger, cand, [0.81, 0.79], cpu=4.0)
    promotion.judge()
    held = ledger.get(cand.id)
    assert held is not None and held.verdict == Verdict.NEEDS_EQUAL_COMPUTE
    assert "100% more CPU per run than main" in (held.reason or "")
    assert "LR = 0.01" in lab.read(lab.main_commit(), "train.py")


def test_a_win_on_an_older_main_is_revalidated_on_the_new_one(tmp_path: Path) -> None:
    lab, ledger, promotion, _ = setup(tmp_path)
    baselines(ledger, BASE)
    first = candidate(ledger, 0.80, lr="0.02")
    second = candidate(ledger, 0.85, lr="0.03")  # same base as the first
    promotion.judge()
    finish_confirms(ledger, first, [0.81, 0.79])
    finish_confirms(ledger, second, [0.84, 0.86])
    promotion.judge()
    verdicts = {e.id: e.verdict for e in ledger.experiments()}
    assert verdicts[first.id] == Verdict.PROMOTED
    assert verdicts[second.id] == Verdict.REVALIDATING
    (again,) = [e for e in ledger.experiments() if e.parent == second.id
                and e.role == Role.CANDIDATE]
    assert again.status is ExperimentStatus.QUEUED and again.base_commit == lab.main_commit()


def test_baselines_are_scheduled_until_the_noise_is_measured(tmp_path: Path) -> None:
    lab, ledger, _, _ = setup(tmp_path)
    queued = schedule_baselines(ledger)
    assert [e.seed for e in queued] == [0, 1, 2]
    assert all(e.role == Role.BASELINE and lab.branch_exists(e.branch) for e in queued)
    assert schedule_baselines(ledger) == []  # already queued
    for exp in queued:
        ledger.put(exp.with_status(ExperimentStatus.FAILED, "python: not found"))
    with pytest.raises(LabError, match="main itself fails to run: 3 baseline runs failed"):
        schedule_baselines(ledger)


def test_a_win_that_changes_a_compute_knob_and_costs_more_is_held_naming_the_knob(
        tmp_path: Path) -> None:
    """The fair-compute rule: a wider model that costs 10% more (under max_cost_increase) is
    held for an equal-compute comparison; the same cost without a compute knob is promoted."""
    from autolab.agents.knobs import compute_kind

    for changes, expected in (({"WIDTH": 16}, Verdict.NEEDS_EQUAL_COMPUTE),
                              ({"LR": 0.02}, Verdict.PROMOTED)):
        lab, ledger, _, _ = setup(tmp_path / str(expected))
        promotion = Promotion(ledger, compute_kind=compute_kind)
        baselines(ledger, BASE, cpu=10.0)
        cand = candidate(ledger, 0.80, cpu=11.0)
        cand = ledger.put(attrs.evolve(cand, hypothesis=attrs.evolve(cand.hypothesis,
                                                                     changes=changes)))
        promotion.judge()
        finish_confirms(ledger, cand, [0.81, 0.79], cpu=11.0)
        promotion.judge()
        done = ledger.get(cand.id)
        assert done is not None and done.verdict == expected, done
        if expected == Verdict.NEEDS_EQUAL_COMPUTE:
            assert "changes WIDTH (width) and costs 10% more CPU per run" in (done.reason or "")
            assert "LR = 0.01" in lab.read(lab.main_commit(), "train.py")

"""``autolab.run.gate``'s fresh confirmation seeds and noise-aware compute comparison, on
synthetic experiment records (pure statistics, no lab)."""

from __future__ import annotations

import pytest

from autolab.run import gate
from autolab_core.config import PromotionSection
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, Result
from autolab_core.vocab import Role

RULES = PromotionSection(noise_runs=3, confirm_runs=2, k_sigma=2.0, max_cost_increase=0.15,
                         min_cost_seconds=0.5)


def run(exp_id: str, seed: int, role: Role = Role.BASELINE, code: str = "main-a",
        code_hash: str | None = "main-a", parent: str | None = None,
        status: ExperimentStatus = ExperimentStatus.FINISHED, cpu: float | None = None,
        eval_cpu: float | None = None, at: float = 0.0) -> Experiment:
    extra = {} if cpu is None else {"train_cpu_seconds": cpu}
    if eval_cpu is not None:
        extra["eval_cpu_seconds"] = eval_cpu
    exp = Experiment(id=exp_id, hypothesis=Hypothesis(id=exp_id, title=exp_id), base_commit="c",
                     branch="", role=role, base_code=code, code_hash=code_hash, parent=parent,
                     seed=seed, result=Result(metric="loss", value=1.0, seed=seed, extra=extra))
    return exp.with_status(status, at=at)


def test_confirmation_seeds_are_fresh_for_that_code_and_deterministic() -> None:
    cand = run("c", 0, Role.CANDIDATE, code_hash="cand-x")
    exps = [
        run("b0", 0), run("b1", 1), run("b2", 2),
        run("b5", 5, status=ExperimentStatus.QUEUED),  # an interleaved baseline not run yet
        run("b-failed", 8, status=ExperimentStatus.FAILED),  # was handed that seed: used
        run("b-old", 6, code="main-old", code_hash="main-old"),  # another main: irrelevant
        cand,
        run("c-1", 3, Role.CONFIRM, code_hash="cand-x", parent="c"),  # an earlier confirmation
        run("dup", 4, Role.CANDIDATE, code_hash="cand-x"),  # the same code proposed again
    ]
    assert gate.confirm_seeds(exps, cand, 2) == [6, 7]
    assert gate.confirm_seeds(list(reversed(exps)), cand, 2) == [6, 7]  # the records decide
    assert gate.fresh_seeds({0, 1, 3}, 3) == [2, 4, 5]


def test_cpu_seconds_count_the_whole_job_when_the_runner_reports_eval_cpu() -> None:
    assert gate.cpu_seconds(run("a", 0, cpu=3.0, eval_cpu=1.5)) == 4.5
    assert gate.cpu_seconds(run("b", 0, cpu=3.0)) == 3.0  # older results: training only
    assert gate.cpu_seconds(run("c", 0)) is None


QUIET = [10.0, 10.2, 9.9]  # main at calibration, machine idle
LOADED = [12.0, 12.6, 11.7]  # main later in the night, next to a CPU hog (+22%)


def test_an_honest_candidate_on_a_loaded_machine_is_not_held_for_cost() -> None:
    """The candidate does the same work as main; it ran while the machine was loaded, as did the
    interleaved baselines nearest to it. Against calibration alone it would look 21% dearer."""
    main = [run(f"q{i}", i, cpu=c, at=1000.0 + i) for i, c in enumerate(QUIET)]
    main += [run(f"l{i}", 3 + i, cpu=c, at=9000.0 + 60 * i) for i, c in enumerate(LOADED)]
    cand = [run(f"c{i}", 10 + i, Role.CANDIDATE, code_hash="x", cpu=c, at=9030.0 + 60 * i)
            for i, c in enumerate([12.3, 11.8, 12.4])]
    near = gate.nearest_in_time(main, cand, 3)
    assert {e.id for e in near} == {"l0", "l1", "l2"}
    cost = gate.compare_cost([12.3, 11.8, 12.4], LOADED, RULES)
    assert cost is not None and not cost.significant
    # The old rule's view (a ratio against the calibration runs) would have held it:
    stale = gate.compare_cost([12.3, 11.8, 12.4], QUIET, RULES)
    assert stale is not None and stale.significant and stale.increase > RULES.max_cost_increase


def test_a_real_thirty_percent_more_cpu_is_significant() -> None:
    dearer = [c * 1.3 for c in [12.3, 11.8, 12.4]]
    cost = gate.compare_cost(dearer, LOADED, RULES)
    assert cost is not None and cost.significant
    assert cost.increase == pytest.approx(0.30, abs=0.03)
    assert "31% more CPU per run than main" in cost.describe()
    # The same increase buried in much larger run-to-run noise is not significant.
    wild = gate.compare_cost([9.0, 22.0, 16.0], [6.0, 15.0, 12.0], RULES)
    assert wild is not None and wild.increase > 0.3 and not wild.significant
    # Under min_cost_seconds per run it is timing noise, however steady.
    tiny = gate.compare_cost([0.13, 0.13, 0.13], [0.1, 0.1, 0.1], RULES)
    assert tiny is not None and not tiny.significant
    assert gate.compare_cost([], LOADED, RULES) is None

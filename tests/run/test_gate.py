"""``autolab.run.gate`` on its own: pure statistics over experiment records, no lab needed."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from autolab.run import gate
from autolab_core.config import PromotionSection
from autolab_core.models import Direction, Experiment, ExperimentStatus, Hypothesis, Result
from autolab_core.vocab import Role, Verdict

MIN = Direction.MINIMIZE


def run(exp_id: str, value: float | None, role: Role = Role.BASELINE, code: str = "main-a",
        parent: str | None = None, verdict: str | None = None, code_hash: str | None = None,
        status: ExperimentStatus = ExperimentStatus.FINISHED) -> Experiment:
    exp = Experiment(id=exp_id, hypothesis=Hypothesis(id=exp_id, title=exp_id), base_commit="c",
                     branch="", role=role, base_code=code, parent=parent, verdict=verdict,
                     code_hash=code_hash,
                     result=None if value is None else Result(metric="loss", value=value))
    return exp.with_status(status)


def test_main_runs_are_baselines_of_that_code_or_a_promoted_candidates_runs() -> None:
    exps = [run("b1", 1.0), run("b2", 1.1), run("b-old", 5.0, code="main-old"),
            run("b-failed", None, status=ExperimentStatus.FAILED),
            run("c1", 0.8, Role.CANDIDATE, verdict=Verdict.PROMOTED, code_hash="main-b"),
            run("c1-1", 0.82, Role.CONFIRM, parent="c1"),
            run("c2", 0.7, Role.CANDIDATE, verdict=Verdict.NOT_BETTER, code_hash="main-c")]
    assert [e.id for e in gate.main_runs(exps, "main-a")] == ["b1", "b2"]
    # After a promotion, main's code is the candidate's: its runs measure main.
    assert [e.id for e in gate.main_runs(exps, "main-b")] == ["c1", "c1-1"]
    assert gate.main_runs(exps, "main-c") == []  # not promoted: not main
    assert [e.id for e in gate.runs_of(exps, "c1")] == ["c1", "c1-1"]
    assert gate.values(gate.runs_of(exps, "c1")) == [0.8, 0.82]


def test_pooled_sigma_pools_groups_of_the_same_code_and_applies_the_floor() -> None:
    main = [1.0, 1.2, 1.1]  # variance 0.01, 2 degrees of freedom
    cand = [0.5, 0.7]  # variance 0.02, 1 degree of freedom
    exps = [run(f"b{i}", v) for i, v in enumerate(main)]
    exps += [run("c", cand[0], Role.CANDIDATE), run("c-1", cand[1], Role.CONFIRM, parent="c")]
    exps.append(run("lonely", 9.0, Role.CANDIDATE))  # one run: no information about noise
    expected = math.sqrt((0.01 * 2 + 0.02 * 1) / 3)
    assert gate.pooled_sigma(exps) == pytest.approx(expected)
    assert gate.pooled_sigma(exps, floor=1.0) == 1.0
    assert gate.pooled_sigma([run("only", 1.0)]) is None


RULES = PromotionSection(noise_runs=3, confirm_runs=2, k_sigma=2.0, min_delta=0.0)


def test_screen_threshold_is_k_sigma_and_confirm_threshold_is_k_standard_errors() -> None:
    main, sigma = [1.0, 1.0, 1.0], 0.1
    # Screen: one run must beat main by more than 2 * sigma = 0.2.
    assert not gate.judge([0.81], main, sigma, MIN, RULES, screen=True).passed
    screened = gate.judge([0.79], main, sigma, MIN, RULES, screen=True)
    assert screened.passed and screened.threshold == pytest.approx(0.2)
    assert screened.effect == pytest.approx(0.21)  # positive = better, also when minimising
    # Confirm: 3 runs vs 3: se = 0.1 * sqrt(2/3); threshold 2 se ~ 0.163.
    se = 0.1 * math.sqrt(1 / 3 + 1 / 3)
    confirmed = gate.judge([0.83, 0.84, 0.83], main, sigma, MIN, RULES, screen=False)
    assert confirmed.err == pytest.approx(se) and confirmed.threshold == pytest.approx(2 * se)
    assert confirmed.passed and (confirmed.n, confirmed.m) == (3, 3)
    assert not gate.judge([0.85, 0.85, 0.85], main, sigma, MIN, RULES, screen=False).passed
    # Maximising flips the sign.
    assert gate.judge([1.3], main, sigma, Direction.MAXIMIZE, RULES, screen=True).passed


def test_min_delta_floors_the_threshold() -> None:
    rules = PromotionSection(k_sigma=2.0, min_delta=0.5)
    v = gate.judge([0.6], [1.0, 1.0, 1.0], 0.01, MIN, rules, screen=True)
    assert v.threshold == 0.5 and not v.passed
    assert "0.4 better than main" in v.describe("loss") and "needed > 0.5" in v.describe("loss")


def test_aa_identical_code_is_rarely_promoted() -> None:
    """A/A: candidates drawn from main's own distribution pass screen *and* confirmation rarely
    (k_sigma = 2 with the noise known: the screen alone lets ~2.3% through, confirmation cuts
    that to ~1%). With sigma estimated from few runs, see the next test."""
    rng = random.Random(7)
    trials, promoted = 4000, 0
    for _ in range(trials):
        main = [rng.gauss(1.0, 0.05) for _ in range(RULES.noise_runs)]
        sigma = 0.05
        first = rng.gauss(1.0, 0.05)
        if not gate.judge([first], main, sigma, MIN, RULES, screen=True).passed:
            continue
        runs = [first] + [rng.gauss(1.0, 0.05) for _ in range(RULES.confirm_runs)]
        promoted += gate.judge(runs, main, sigma, MIN, RULES, screen=False).passed
    assert promoted / trials < 0.02
    # ... while a real improvement of 4 sigma is found nearly always.
    found = 0
    for _ in range(500):
        main = [rng.gauss(1.0, 0.05) for _ in range(RULES.noise_runs)]
        sigma = max(statistics.stdev(main), 0.05)
        runs = [rng.gauss(0.8, 0.05) for _ in range(1 + RULES.confirm_runs)]
        found += (gate.judge(runs[:1], main, sigma, MIN, RULES, screen=True).passed
                  and gate.judge(runs, main, sigma, MIN, RULES, screen=False).passed)
    assert found / 500 > 0.8


def test_t_quantile_matches_the_tables() -> None:
    """Values from a printed table of Student's t (two-sided 95% and 90%, one-sided 97.7%)."""
    for p, df, table in ((0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776),
                         (0.975, 10, 2.228), (0.95, 3, 2.353), (0.95, 30, 1.697)):
        assert gate.t_quantile(p, df) == pytest.approx(table, rel=0.005)
    assert gate.t_quantile(statistics.NormalDist().cdf(2.0), 1000) == pytest.approx(2.0, abs=0.01)


def pooled(*groups: list[float]) -> tuple[float, int]:
    ss = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups)
    df = sum(len(g) - 1 for g in groups)
    return math.sqrt(ss / df), df


def test_aa_with_sigma_estimated_from_three_runs_of_main_stays_under_two_percent() -> None:
    """Sigma pooled from 3 runs of main and the candidate's 3 (4 degrees of freedom) is often
    too small: with a normal k = 2, 3.4% of identical code is promoted. The confirmation's k is
    the t quantile for those degrees of freedom (2.87), which brings it to 1.9%, while a real
    4-sigma win is still found 90% of the time (2 million trials: benchmarks/bench_gate_aa.py;
    here fewer, so the bounds leave room for Monte Carlo error)."""
    rng = random.Random(11)
    trials, normal, student = 20000, 0, 0
    for _ in range(trials):
        main = [rng.gauss(1.0, 0.05) for _ in range(3)]
        first = rng.gauss(1.0, 0.05)
        if not gate.judge([first], main, pooled(main)[0], MIN, RULES, screen=True).passed:
            continue
        runs = [first] + [rng.gauss(1.0, 0.05) for _ in range(RULES.confirm_runs)]
        sigma, df = pooled(main, runs)
        assert df == 4
        normal += gate.judge(runs, main, sigma, MIN, RULES, screen=False).passed
        student += gate.judge(runs, main, sigma, MIN, RULES, screen=False, df=df).passed
    assert normal / trials > 0.03
    assert student / trials < 0.0225 and student < 0.65 * normal
    found = 0
    for _ in range(1000):
        main = [rng.gauss(1.0, 0.05) for _ in range(3)]
        runs = [rng.gauss(0.8, 0.05) for _ in range(1 + RULES.confirm_runs)]
        sigma, df = pooled(main, runs)
        found += (gate.judge(runs[:1], main, pooled(main)[0], MIN, RULES, screen=True).passed
                  and gate.judge(runs, main, sigma, MIN, RULES, screen=False, df=df).passed)
    assert found / 1000 > 0.85


def test_pooled_noise_counts_its_degrees_of_freedom() -> None:
    exps = [run(f"b{i}", v) for i, v in enumerate([1.0, 1.2, 1.1])]
    exps += [run("c", 0.5, Role.CANDIDATE), run("c-1", 0.7, Role.CONFIRM, parent="c")]
    found = gate.pooled_noise(exps)
    assert found is not None and found[1] == 3 and found[0] == gate.pooled_sigma(exps)
    assert gate.pooled_noise([run("only", 1.0)]) is None

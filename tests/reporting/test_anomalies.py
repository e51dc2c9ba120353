"""Anomaly flags on synthetic curves: each check fires on the bad case, stays quiet on the
near miss, and says why."""

from __future__ import annotations

import math

import attrs
import pytest

from autolab.reporting import anomalies as an
from autolab.reporting.curves import Curve, curves_from
from autolab.reporting.options import ReporterOptions, parse_reporter_options
from autolab_core.errors import ConfigError
from autolab_core.models import (
    Direction,
    Experiment,
    ExperimentStatus,
    Hypothesis,
    JobState,
    JobStatus,
    MetricPoint,
    Result,
)

OPTS = ReporterOptions(min_steps=100, stall_s=600)


def loss_curve(n: int = 1000, scale: float = 1.0, shift: float = 0.0, every: int = 10,
               t0: float = 0.0, pace: float = 1.0) -> Curve:
    steps = tuple(range(0, n, every))
    return Curve(steps, tuple(scale * (2 + 8 * math.exp(-s / 120)) + shift for s in steps),
                 tuple(t0 + s * pace for s in steps))


def flat(value: float, n: int = 100) -> Curve:
    return Curve(tuple(range(n)), (value,) * n, tuple(float(i) for i in range(n)))


def experiment(exp_id: str = "e1", role: str = "candidate", result: float | None = None,
               status: ExperimentStatus = ExperimentStatus.STARTED, started: float = 1000.0,
               trusted: bool = True) -> Experiment:
    e = Experiment(id=exp_id, hypothesis=Hypothesis(id="h", title="t"), base_commit="c0",
                   branch="b", role=role,
                   result=None if result is None else Result("val_bpb", result, trusted=trusted))
    e = e.with_status(ExperimentStatus.QUEUED, at=started - 50)
    e = e.with_status(ExperimentStatus.STARTED, at=started)
    return e if status is ExperimentStatus.STARTED else e.with_status(status, at=started + 500)


BASELINES = [loss_curve(scale=s) for s in (0.99, 1.0, 1.01)]


def test_nan_and_inf_are_flagged_with_metric_and_step() -> None:
    bad = Curve((0, 1, 2, 3), (1.0, 0.9, math.nan, math.inf))
    found = an.check_values("e1", {"loss": bad, "inf_only": Curve((5,), (-math.inf,)),
                                   "ok": flat(1.0)})
    assert [(a.flag, a.step) for a in found] == [("nan", 5), ("nan", 2)]
    assert "loss is nan at step 2" in found[1].reason
    assert an.check_values("e1", {"loss": loss_curve()}) == []


def test_divergence_against_the_baseline_curve() -> None:
    base = loss_curve()
    diverged = Curve(base.steps, tuple(v * (1 if s < 400 else 3) for s, v in
                                        zip(base.steps, base.values, strict=True)))
    found = an.check_divergence("e1", diverged, BASELINES, OPTS)
    assert found is not None and found.flag == "divergence" and found.step == 400
    assert "baseline median" in found.reason and "train_loss" in found.reason
    slightly_worse = loss_curve(scale=1.2)  # 20% worse: a bad idea, not a divergence
    assert an.check_divergence("e1", slightly_worse, BASELINES, OPTS) is None
    early_spike = Curve(base.steps, tuple(v * (5 if 20 <= s < 90 else 1) for s, v in
                                          zip(base.steps, base.values, strict=True)))
    assert an.check_divergence("e1", early_spike, BASELINES, OPTS) is None  # before min_steps
    blip = Curve(base.steps, tuple(v * (3 if s in (500, 510) else 1) for s, v in
                                   zip(base.steps, base.values, strict=True)))
    assert an.check_divergence("e1", blip, BASELINES, OPTS) is None  # 2 points < patience 3


def test_divergence_without_baselines_uses_the_runs_own_best() -> None:
    steps = tuple(range(0, 600, 10))
    values = tuple(10 * math.exp(-s / 100) + 1 if s < 300 else 1.0 + (s - 300) / 20
                   for s in steps)
    found = an.check_divergence("e1", Curve(steps, values), [], OPTS)
    assert found is not None and "its own best" in found.reason
    assert an.check_divergence("e1", loss_curve(), [], OPTS) is None


def test_divergence_for_a_maximized_metric() -> None:
    opts = ReporterOptions(min_steps=0, metric="accuracy", metric_direction="maximize")
    good = flat(0.9)
    collapsed = Curve(good.steps, tuple(0.9 if s < 50 else 0.1 for s in good.steps))
    assert an.check_divergence("e1", collapsed, [good], opts).step == 50
    assert an.check_divergence("e1", flat(0.95), [good], opts) is None


def test_stall_only_while_running() -> None:
    running = experiment(started=1000.0)
    assert an.check_stall(running, 1100.0, now=1100.0 + 601, options=OPTS).flag == "stall"
    assert "since its last metric" in an.check_stall(running, 1100.0, 1701.0, OPTS).reason
    assert an.check_stall(running, 1100.0, now=1100.0 + 599, options=OPTS) is None
    silent = an.check_stall(running, None, now=1000.0 + 700, options=OPTS)
    assert silent is not None and "since it started" in silent.reason
    done = experiment(status=ExperimentStatus.FINISHED)
    assert an.check_stall(done, 0.0, now=1e9, options=OPTS) is None


def test_throughput_drop_against_baselines() -> None:
    base = [flat(50_000.0), flat(51_000.0)]
    slow = an.check_throughput("e1", flat(30_000.0), base, OPTS)
    assert slow is not None and slow.flag == "throughput_drop" and "41% below" in slow.reason
    assert an.check_throughput("e1", flat(45_000.0), base, OPTS) is None
    warmup = Curve(tuple(range(100)), tuple(1000.0 if i < 5 else 50_000.0 for i in range(100)))
    assert an.check_throughput("e1", warmup, base, OPTS) is None  # slow warm-up is ignored
    assert an.check_throughput("e1", flat(10.0), [], OPTS) is None  # nothing to compare with


@pytest.mark.parametrize(
    ("state", "log", "flag"),
    [
        (JobState(JobStatus.OOM, "OOMKilled"), "", "crash_oom"),
        (JobState(JobStatus.FAILED, "exit 1", 1), "torch.OutOfMemoryError: CUDA out of memory.",
         "crash_oom"),
        (JobState(JobStatus.FAILED, "killed", 137), "", "crash_oom"),
        (JobState(JobStatus.TIMEOUT, "time limit 1800s"), "", "crash_timeout"),
        (JobState(JobStatus.FAILED, "CANCELLED AT 12:00 DUE TO TIME LIMIT"), "", "crash_timeout"),
        (JobState(JobStatus.PREEMPTED, "spot reclaimed"), "", "crash_preemption"),
        (JobState(JobStatus.FAILED, "NODE_FAIL"), "", "crash_preemption"),
        (JobState(JobStatus.FAILED, "exit code 1", 1),
         "Traceback (most recent call last):\nValueError: shapes do not match\n", "crash_error"),
        (JobState(JobStatus.SUCCEEDED), "", None),
        (JobState(JobStatus.CANCELLED, "by user"), "", None),
        (JobState(JobStatus.RUNNING), "", None),
    ],
)
def test_crashes_are_classified(state: JobState, log: str, flag: str | None) -> None:
    found = an.classify_crash("e1", state, log)
    assert (found.flag if found else None) == flag
    if flag == "crash_error":
        assert "ValueError: shapes do not match" in found.reason and "exit code 1" in found.reason


MAIN = an.TrustedMain((1.000, 1.002, 0.998))


def test_implausible_win_is_judged_on_trusted_numbers_only() -> None:
    cheat = experiment(result=0.40, status=ExperimentStatus.FINISHED)
    found = an.check_implausible(cheat, MAIN, Direction.MINIMIZE, OPTS)
    assert found is not None and found.flag == "implausible_metric"
    assert "300 sigma" in found.reason and "60.0% of main" in found.reason
    assert "protected evaluation" in found.reason
    # the same number printed by the program itself is not the rule's to judge
    printed = experiment(result=0.40, status=ExperimentStatus.FINISHED, trusted=False)
    assert an.check_implausible(printed, MAIN, Direction.MINIMIZE, OPTS) is None
    modest = experiment(result=0.996, status=ExperimentStatus.FINISHED)  # 2 sigma
    assert an.check_implausible(modest, MAIN, Direction.MINIMIZE, OPTS) is None
    big_real = experiment(result=0.80, status=ExperimentStatus.FINISHED)  # 100 sigma, 20%
    assert an.check_implausible(big_real, MAIN, Direction.MINIMIZE, OPTS) is None
    worse = experiment(result=1.1, status=ExperimentStatus.FINISHED)
    assert an.check_implausible(worse, MAIN, Direction.MINIMIZE, OPTS) is None
    up = experiment(result=1.6, status=ExperimentStatus.FINISHED)  # maximize: far better
    assert an.check_implausible(up, MAIN, Direction.MAXIMIZE, OPTS) is not None


def test_implausible_limit_follows_the_best_promoted_improvement() -> None:
    after_small_wins = an.TrustedMain(MAIN.values, best_gain=0.03)  # 3x 3% = 9% limit
    jump = experiment(result=0.85, status=ExperimentStatus.FINISHED)  # 15%
    found = an.check_implausible(jump, after_small_wins, Direction.MINIMIZE, OPTS)
    assert found is not None and "3x the best promoted improvement (3.0%)" in found.reason
    step = experiment(result=0.95, status=ExperimentStatus.FINISHED)  # 5%, 25 sigma
    assert an.check_implausible(step, after_small_wins, Direction.MINIMIZE, OPTS) is None
    noisy = an.TrustedMain(MAIN.values, sigma=0.05, best_gain=0.03)  # 15% is only 3 sigma
    assert an.check_implausible(jump, noisy, Direction.MINIMIZE, OPTS) is None


def test_attack_plausible_printed_loss_does_not_hide_an_implausible_trusted_win() -> None:
    """A patch prints a training loss that falls like a real improvement (below the
    baselines', not unchanged), while the protected evaluation's number is implausible: the
    printed curve must not excuse it."""
    crafted = {"train_loss": loss_curve(scale=0.7), "tok_per_s": flat(50_000.0)}
    base = [{"train_loss": c, "tok_per_s": flat(50_000.0)} for c in BASELINES]
    cheat = experiment(result=0.30, status=ExperimentStatus.FINISHED)
    found = an.detect(cheat, crafted, base, options=OPTS, now=2000.0, main=MAIN)
    assert [a.flag for a in found] == ["implausible_metric"]
    assert an.needs_human(an.as_flag(a) for a in found)


def _run(exp_id: str, role: str, value: float, code: str, *, trusted: bool = True,
         parent: str | None = None, verdict: str | None = None, code_hash: str | None = None
         ) -> Experiment:
    e = experiment(exp_id, role, value, ExperimentStatus.FINISHED, trusted=trusted)
    return attrs.evolve(e, base_code=code, parent=parent, verdict=verdict, code_hash=code_hash)


def test_trusted_main_reads_the_gates_runs_and_skips_printed_numbers() -> None:
    lab = [
        _run("b1", "baseline", 1.00, "m0"), _run("b2", "baseline", 1.02, "m0"),
        _run("b3", "baseline", 0.10, "m0", trusted=False),  # printed, not protected: ignored
        _run("w", "candidate", 0.90, "m0", verdict="promoted", code_hash="m1"),  # -10%
        _run("w2", "confirm", 0.92, "m0", parent="w", code_hash="m1"),
        _run("c", "candidate", 0.5, "m1"),
    ]
    main = an.trusted_main(lab, lab[-1], Direction.MINIMIZE)
    assert main.values == (0.90, 0.92)  # main's code m1 was measured by the promoted runs
    assert main.best_gain == pytest.approx(1 - 0.91 / 1.01)
    assert main.sigma == pytest.approx(math.sqrt((0.0002 + 0.0002) / 2))  # the gate's pooled


def test_detect_combines_checks_and_spares_baselines() -> None:
    pts = [MetricPoint("e1", s, "train_loss", v, 1000.0 + s) for s, v in
           zip(range(0, 1000, 10), [*loss_curve().values[:50], *[50.0] * 50], strict=True)]
    pts += [MetricPoint("e1", s, "tok_per_s", 20_000.0, 1000.0 + s) for s in range(0, 1000, 10)]
    pts.append(MetricPoint("e1", 3, "grad_norm", math.nan, 1003.0))
    curves = curves_from(pts)["e1"]
    base = [{"train_loss": c, "tok_per_s": flat(50_000.0)} for c in BASELINES]
    state = JobState(JobStatus.FAILED, "exit code 1", 1)
    found = an.detect(experiment(status=ExperimentStatus.FAILED), curves, base, options=OPTS,
                      now=5000.0, job_state=state, log_tail="boom")
    assert {a.flag for a in found} == {"nan", "divergence", "throughput_drop", "crash_error"}
    assert an.needs_human(a.flag for a in found)
    as_baseline = an.detect(experiment(role="baseline", status=ExperimentStatus.FINISHED),
                            curves, base, options=OPTS, now=5000.0)
    assert {a.flag for a in as_baseline} == {"nan"}  # no comparison for main's own runs
    nan_result = experiment(result=math.nan, status=ExperimentStatus.FINISHED)
    assert [a.flag for a in an.detect(nan_result, {}, options=OPTS, now=0.0)] == ["nan"]
    assert not an.needs_human(["promoted:abc", "note"])


def test_reporter_options_parse_and_name_the_fix() -> None:
    opts = parse_reporter_options({"early_stopping": "median", "stall_s": "10m",
                                   "min-steps": 50, "halving_rungs": [10, 30]})
    assert (opts.early_stopping, opts.stall_s, opts.min_steps) == ("median", 600.0, 50)
    assert parse_reporter_options(None).early_stopping == "off"
    with pytest.raises(ConfigError, match="choose one of: 'off', 'median', 'halving'"):
        parse_reporter_options({"early_stopping": "asha"})
    with pytest.raises(ConfigError, match=r"\[reporter\] unknown key 'patience'.*stall_s"):
        parse_reporter_options({"patience": 3})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        parse_reporter_options({"throughput_drop": 1.5})

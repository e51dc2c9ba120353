"""Anomaly flags, each with a reason a person can check.

An experiment carrying a blocking flag (:data:`autolab_core.vocab.BLOCKING`) is never promoted
without a human: the run loop stores ``as_flag(anomaly)`` (``"<kind>: <reason>"``, a
:class:`~autolab_core.vocab.Flag`) in ``Experiment.flags`` and its promotion gate calls
:func:`autolab_core.vocab.needs_human`. The checks (all pure functions)::

    check_values(experiment_id, curves: Mapping[name, Curve]) -> list[Anomaly]       # NaN/Inf
    check_divergence(experiment_id, curve, baselines: Sequence[Curve], options) -> Anomaly | None
    check_stall(experiment, last_metric_at: float | None, now, options) -> Anomaly | None
    check_throughput(experiment_id, curve, baselines: Sequence[Curve], options) -> Anomaly | None
    classify_crash(experiment_id, state: JobState, log_tail="") -> Anomaly | None
    check_implausible(experiment, main: TrustedMain, direction, options) -> Anomaly | None
    detect(experiment, curves, baseline_curves, options=..., now=..., job_state=None,
           log_tail="", main=None, direction=MINIMIZE) -> list[Anomaly]

``curves`` is one experiment's ``{name: Curve}`` (see :func:`.curves.curves_from`) and
``baseline_curves`` the same for each baseline run of ``main``.

Trust: curves are what the patched program printed about itself. They may raise NaN,
divergence, stall and throughput flags (a flag can only hold a candidate back, never let it
through), but the implausible-win rule, which exists to catch a patch that games the score, reads
only results of the protected evaluation (``Result.trusted``) and main's results
(:class:`TrustedMain`); nothing the patch prints can move it either way.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence

import attrs

from autolab.reporting.curves import Curve, reference
from autolab.reporting.gate_runs import GateRuns
from autolab.reporting.options import ReporterOptions
from autolab.run.gate import pooled_sigma
from autolab_core.models import Direction, Experiment, ExperimentStatus, JobState, JobStatus
from autolab_core.vocab import BLOCKING, Flag, FlagKind, Role, Verdict, needs_human

__all__ = [
    "BLOCKING", "Anomaly", "TrustedMain", "as_flag", "check_divergence", "check_implausible",
    "check_stall", "check_throughput", "check_values", "classify_crash", "detect",
    "needs_human", "trusted_main",
]


@attrs.frozen
class Anomaly:
    """One finding: ``flag`` is a :class:`~autolab_core.vocab.FlagKind`, ``reason`` says what
    was seen."""

    experiment_id: str
    flag: str
    reason: str
    step: int | None = None


def as_flag(anomaly: Anomaly) -> str:
    """The string kept in ``Experiment.flags``: ``"<kind>: <reason>"``."""
    return str(Flag(anomaly.flag, anomaly.reason))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


# -- values ----------------------------------------------------------------------------------
def check_values(experiment_id: str, curves: Mapping[str, Curve]) -> list[Anomaly]:
    """The first NaN or Inf of each metric."""
    found = []
    for name, curve in sorted(curves.items()):
        for step, value in zip(curve.steps, curve.values, strict=True):
            if not math.isfinite(value):
                found.append(Anomaly(
                    experiment_id, FlagKind.NAN, f"{name} is {value} at step {step}", step
                ))
                break
    return found


# -- divergence ------------------------------------------------------------------------------
def check_divergence(
    experiment_id: str,
    curve: Curve | None,
    baselines: Sequence[Curve],
    options: ReporterOptions,
) -> Anomaly | None:
    """Loss (``options.metric``) well above the baseline curve at the same steps.

    A point is bad when it is worse than the baselines' median by more than
    ``divergence_ratio`` of that median; ``divergence_patience`` bad points in a row, after
    ``min_steps``, flag the run. Without baselines the run's own best value so far is the
    reference (the loss climbed back up).
    """
    if curve is None:
        return None
    curve = curve.finite()
    direction = options.direction
    ratio, patience = options.divergence_ratio, options.divergence_patience
    steps = [s for s in curve.steps if s >= options.min_steps]
    values = curve.values[len(curve.steps) - len(steps):]
    if baselines:
        refs = reference(baselines, steps)
        what = "the baseline median"
    else:
        refs, best = [], None
        for v in curve.values[: len(curve.steps) - len(steps)]:
            best = v if best is None or direction.better(v, best) else best
        for v in values:
            refs.append(best)
            best = v if best is None or direction.better(v, best) else best
        what = "its own best so far"
    run: list[tuple[int, float, float]] = []
    for step, value, ref in zip(steps, values, refs, strict=True):
        if ref is None:
            run = []
            continue
        margin = ratio * abs(ref)
        bad = value > ref + margin if direction is Direction.MINIMIZE else value < ref - margin
        run = [*run, (step, value, ref)] if bad else []
        if len(run) >= patience:
            first, last = run[0], run[-1]
            return Anomaly(
                experiment_id, FlagKind.DIVERGENCE,
                f"{options.metric} diverged: {_fmt(last[1])} at step {last[0]} vs "
                f"{_fmt(last[2])} for {what} ({patience} points in a row more than "
                f"{ratio:.0%} worse, from step {first[0]})",
                first[0],
            )
    return None


# -- stall -----------------------------------------------------------------------------------
def check_stall(
    experiment: Experiment, last_metric_at: float | None, now: float, options: ReporterOptions
) -> Anomaly | None:
    """A running experiment that reported no metric for ``stall_s`` seconds."""
    if experiment.status is not ExperimentStatus.STARTED:
        return None
    marks = [t for t in (last_metric_at, experiment.at(ExperimentStatus.STARTED)) if t]
    if not marks:
        return None
    quiet = now - max(marks)
    if quiet <= options.stall_s:
        return None
    since = "its last metric" if last_metric_at and last_metric_at >= max(marks) else "it started"
    return Anomaly(
        experiment.id, FlagKind.STALL,
        f"no metric for {quiet:.0f}s since {since} while running (stall_s = {options.stall_s:.0f})",
    )


# -- throughput ------------------------------------------------------------------------------
def _steady_median(curve: Curve) -> float | None:
    """Median after the first 10% of points (warm-up, compilation)."""
    vals = [v for v in curve.values if math.isfinite(v)]
    vals = vals[len(vals) // 10:]
    return statistics.median(vals) if len(vals) >= 3 else None


def check_throughput(
    experiment_id: str,
    curve: Curve | None,
    baselines: Sequence[Curve],
    options: ReporterOptions,
) -> Anomaly | None:
    """Throughput (``throughput_metric``) more than ``throughput_drop`` below the baselines'."""
    if curve is None or not baselines:
        return None
    mine = _steady_median(curve)
    theirs = [m for c in baselines if (m := _steady_median(c)) is not None]
    if mine is None or not theirs:
        return None
    base = statistics.median(theirs)
    if base <= 0 or mine >= (1 - options.throughput_drop) * base:
        return None
    return Anomaly(
        experiment_id, FlagKind.THROUGHPUT,
        f"{options.throughput_metric} {_fmt(mine)} is {1 - mine / base:.0%} below the baseline "
        f"{_fmt(base)} (limit {options.throughput_drop:.0%})",
    )


# -- crashes ---------------------------------------------------------------------------------
_OOM = re.compile(
    r"out of memory|OutOfMemoryError|\bOOM\b|oom[-_ ]kill|MemoryError|memory limit|"
    r"Cannot allocate memory|exit code 137|signal 9\b|SIGKILL",
    re.IGNORECASE,
)
_TIMEOUT = re.compile(r"time ?limit|timed out|timeout|deadline exceeded", re.IGNORECASE)
_PREEMPT = re.compile(
    r"preempt|NODE_FAIL|node fail|spot (instance )?(interrupt|reclaim)|evicted|requeue",
    re.IGNORECASE,
)


def classify_crash(experiment_id: str, state: JobState, log_tail: str = "") -> Anomaly | None:
    """OOM, timeout, preemption or error, from the job's status, its reason and log tail.

    Succeeded, cancelled and still-running jobs are not crashes (None).
    """
    status = state.status
    text = " ".join(t for t in (state.reason or "", log_tail[-4000:]) if t)
    detail = (state.reason or "").strip() or "no reason given"
    if state.exit_code is not None:
        detail += f"; exit code {state.exit_code}"
    if status is JobStatus.OOM:
        return Anomaly(experiment_id, FlagKind.CRASH_OOM, f"out of memory ({detail})")
    if status is JobStatus.TIMEOUT:
        return Anomaly(experiment_id, FlagKind.CRASH_TIMEOUT, f"hit its time limit ({detail})")
    if status is JobStatus.PREEMPTED:
        return Anomaly(experiment_id, FlagKind.CRASH_PREEMPTED, f"preempted ({detail})")
    if status not in (JobStatus.FAILED, JobStatus.UNKNOWN) or (
        status is JobStatus.UNKNOWN and not text
    ):
        return None
    if _OOM.search(text) or state.exit_code in (137, -9):
        return Anomaly(experiment_id, FlagKind.CRASH_OOM, f"out of memory ({detail})")
    if _PREEMPT.search(text):
        return Anomaly(experiment_id, FlagKind.CRASH_PREEMPTED, f"preempted ({detail})")
    if _TIMEOUT.search(state.reason or ""):
        return Anomaly(experiment_id, FlagKind.CRASH_TIMEOUT, f"hit a time limit ({detail})")
    last = next((ln.strip() for ln in reversed(log_tail.splitlines()) if ln.strip()), "")
    tail = f"; last log line: {last[:200]}" if last else ""
    return Anomaly(experiment_id, FlagKind.CRASH_ERROR, f"failed ({detail}){tail}")


# -- implausible results ---------------------------------------------------------------------
@attrs.frozen
class TrustedMain:
    """What a candidate's trusted result is compared with: numbers from protected code only.

    ``values`` are main's trusted results on the candidate's base (the runs the noise gate
    measures main with), ``sigma`` the gate's pooled seed noise (None: the spread of
    ``values``), ``best_gain`` the largest relative improvement a promoted, trusted candidate
    ever made over its main (None before the first promotion).
    """

    values: tuple[float, ...]
    sigma: float | None = None
    best_gain: float | None = None


def _trusted(runs: Sequence[Experiment]) -> list[float]:
    return [e.result.value for e in runs if e.result is not None and e.result.trusted]


def _relative_gain(cand: Sequence[float], main: Sequence[float], direction: Direction
                   ) -> float | None:
    if not cand or not main:
        return None
    base = statistics.fmean(main)
    gain = direction.improvement(statistics.fmean(cand), base)
    return gain / abs(base) if base else None


def trusted_main(experiments: Sequence[Experiment], candidate: Experiment,
                 direction: Direction) -> TrustedMain:
    """The :class:`TrustedMain` of ``candidate`` from the lab's records (the gate's runs)."""
    runs, best = GateRuns.of(experiments), None
    for e in experiments:
        if e.role == Role.CANDIDATE and e.verdict == Verdict.PROMOTED and e.id != candidate.id:
            rel = _relative_gain(_trusted(runs.of_candidate(e)),
                                 _trusted(runs.of_main(e.base_code or "")), direction)
            best = rel if rel is not None and (best is None or rel > best) else best
    trusted = [e for e in experiments if e.result is not None and e.result.trusted]
    return TrustedMain(tuple(_trusted(runs.of_main(candidate.base_code or ""))),
                       pooled_sigma(trusted), best)


def check_implausible(experiment: Experiment, main: TrustedMain, direction: Direction,
                      options: ReporterOptions) -> Anomaly | None:
    """A trusted result that beats main by an implausible margin.

    Flagged when the protected evaluation's number beats main's mean by more than
    ``implausible_sigmas`` noise bands (``sigma``, never less than ``min_rel_noise`` of main's
    value) *and* by more than ``implausible_ratio`` times the largest relative improvement any
    promoted candidate made (before the first promotion: more than ``implausible_gain`` of
    main's value). Untrusted results (read from the program's output) are not judged here:
    the rule uses only numbers produced by protected code.
    """
    result = experiment.result
    if result is None or not result.trusted or not main.values or not math.isfinite(result.value):
        return None
    base = statistics.fmean(main.values)
    sigma = main.sigma
    if sigma is None:
        sigma = statistics.stdev(main.values) if len(main.values) > 1 else 0.0
    noise = max(sigma, abs(base) * options.min_rel_noise, 1e-12)
    gain = direction.improvement(result.value, base)
    if gain <= options.implausible_sigmas * noise:
        return None
    rel = gain / max(abs(base), 1e-12)
    if main.best_gain is None or main.best_gain <= 0:
        limit, why = options.implausible_gain, "no promoted change has come close"
    else:
        limit = options.implausible_ratio * main.best_gain
        why = (f"{options.implausible_ratio:g}x the best promoted improvement "
               f"({main.best_gain:.1%})")
    if rel <= limit:
        return None
    return Anomaly(
        experiment.id, FlagKind.IMPLAUSIBLE,
        f"{result.metric} {_fmt(result.value)} from the protected evaluation beats main's "
        f"{_fmt(base)} by {_fmt(gain)} ({gain / noise:.0f} sigma, {rel:.1%} of main; limit "
        f"{limit:.1%}: {why}); a person should check the patch before it is promoted",
    )


# -- everything at once ----------------------------------------------------------------------
def detect(
    experiment: Experiment,
    curves: Mapping[str, Curve],
    baseline_curves: Sequence[Mapping[str, Curve]] = (),
    *,
    options: ReporterOptions,
    now: float,
    job_state: JobState | None = None,
    log_tail: str = "",
    main: TrustedMain | None = None,
    direction: Direction = Direction.MINIMIZE,
) -> list[Anomaly]:
    """Every check that applies to ``experiment`` given what is known now.

    ``direction`` is the decisive metric's. Baseline runs are compared with nothing, but their
    NaN, stall and crash checks still apply. ``main`` enables the implausible-win rule.
    """
    found = check_values(experiment.id, curves)
    is_base = experiment.role == Role.BASELINE
    loss = curves.get(options.metric)
    base_loss = [c[options.metric] for c in baseline_curves if options.metric in c]
    if not is_base:
        div = check_divergence(experiment.id, loss, base_loss, options)
        if div:
            found.append(div)
        tput = check_throughput(
            experiment.id, curves.get(options.throughput_metric),
            [c[options.throughput_metric] for c in baseline_curves
             if options.throughput_metric in c],
            options,
        )
        if tput:
            found.append(tput)
    last = max((c.times[-1] for c in curves.values() if c.times), default=None)
    stall = check_stall(experiment, last, now, options)
    if stall:
        found.append(stall)
    if job_state is not None:
        crash = classify_crash(experiment.id, job_state, log_tail)
        if crash:
            found.append(crash)
    if not is_base and experiment.result is not None:
        if not math.isfinite(experiment.result.value):
            found.append(Anomaly(experiment.id, FlagKind.NAN,
                                 f"{experiment.result.metric} is {experiment.result.value}"))
        elif main is not None:
            odd = check_implausible(experiment, main, direction, options)
            if odd:
                found.append(odd)
    return found

"""Anomaly flags, each with a reason a person can check.

An experiment carrying any flag in :data:`BLOCKING` is never promoted without a human: the
orchestrator stores ``as_flag(anomaly)`` (``"<flag>: <reason>"``) in ``Experiment.flags`` and
its promotion gate calls :func:`needs_human`. The checks (all pure functions)::

    check_values(experiment_id, curves: Mapping[name, Curve]) -> list[Anomaly]       # NaN/Inf
    check_divergence(experiment_id, curve, baselines: Sequence[Curve], options) -> Anomaly | None
    check_stall(experiment, last_metric_at: float | None, now, options) -> Anomaly | None
    check_throughput(experiment_id, curve, baselines: Sequence[Curve], options) -> Anomaly | None
    classify_crash(experiment_id, state: JobState, log_tail="") -> Anomaly | None
    check_implausible(experiment, base_values, direction, loss, baseline_losses, options,
                      sigma=None) -> Anomaly | None
    detect(experiment, curves, baseline_curves, options=..., now=..., job_state=None,
           log_tail="", base_values=(), sigma=None, direction=MINIMIZE) -> list[Anomaly]

``curves`` is one experiment's ``{name: Curve}`` (see :func:`.curves.curves_from`) and
``baseline_curves`` the same for each baseline run of ``main``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence

import attrs

from autolab.reporting.curves import Curve, reference
from autolab.reporting.options import ReporterOptions
from autolab_core.models import Direction, Experiment, ExperimentStatus, JobState, JobStatus

NAN = "nan"
DIVERGENCE = "divergence"
STALL = "stall"
THROUGHPUT = "throughput_drop"
CRASH_OOM = "crash_oom"
CRASH_TIMEOUT = "crash_timeout"
CRASH_ERROR = "crash_error"
CRASH_PREEMPTED = "crash_preemption"
IMPLAUSIBLE = "implausible_metric"

#: Flags that keep an experiment from being promoted until a person clears them. A throughput
#: drop is reported but does not block: wall-clock speed moves with the machine's load, and the
#: noise gate already holds back candidates that cost more CPU time than main.
BLOCKING = frozenset(
    {NAN, DIVERGENCE, STALL, CRASH_OOM, CRASH_TIMEOUT, CRASH_ERROR, CRASH_PREEMPTED, IMPLAUSIBLE}
)


@attrs.frozen
class Anomaly:
    """One finding: ``flag`` is one of the constants above, ``reason`` says what was seen."""

    experiment_id: str
    flag: str
    reason: str
    step: int | None = None


def as_flag(anomaly: Anomaly) -> str:
    """The string kept in ``Experiment.flags``: ``"<flag>: <reason>"``."""
    return f"{anomaly.flag}: {anomaly.reason}"


def parse_flag(text: str) -> tuple[str, str]:
    """``(flag, reason)`` from an ``Experiment.flags`` entry (``"divergence: ..."`` or a bare
    ``"divergence"``). The orchestrator's ``"crash: oom: ..."`` maps to ``crash_oom``."""
    flag, _, reason = text.partition(":")
    flag, reason = flag.strip(), reason.strip()
    if flag == "crash":
        kind, _, rest = reason.partition(":")
        kind = {"preempted": "preemption", "failed": "error"}.get(kind.strip(), kind.strip())
        if f"crash_{kind}" in BLOCKING:
            return f"crash_{kind}", rest.strip() or reason
    return flag, reason


def needs_human(flags: Iterable[str]) -> bool:
    """True when any flag (bare or ``"<flag>: <reason>"``) blocks automatic promotion."""
    return any(parse_flag(f)[0] in BLOCKING for f in flags)


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
                    experiment_id, NAN, f"{name} is {value} at step {step}", step
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
                experiment_id, DIVERGENCE,
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
        experiment.id, STALL,
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
        experiment_id, THROUGHPUT,
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
        return Anomaly(experiment_id, CRASH_OOM, f"out of memory ({detail})")
    if status is JobStatus.TIMEOUT:
        return Anomaly(experiment_id, CRASH_TIMEOUT, f"hit its time limit ({detail})")
    if status is JobStatus.PREEMPTED:
        return Anomaly(experiment_id, CRASH_PREEMPTED, f"preempted ({detail})")
    if status not in (JobStatus.FAILED, JobStatus.UNKNOWN) or (
        status is JobStatus.UNKNOWN and not text
    ):
        return None
    if _OOM.search(text) or state.exit_code in (137, -9):
        return Anomaly(experiment_id, CRASH_OOM, f"out of memory ({detail})")
    if _PREEMPT.search(text):
        return Anomaly(experiment_id, CRASH_PREEMPTED, f"preempted ({detail})")
    if _TIMEOUT.search(state.reason or ""):
        return Anomaly(experiment_id, CRASH_TIMEOUT, f"hit a time limit ({detail})")
    last = next((ln.strip() for ln in reversed(log_tail.splitlines()) if ln.strip()), "")
    tail = f"; last log line: {last[:200]}" if last else ""
    return Anomaly(experiment_id, CRASH_ERROR, f"failed ({detail}){tail}")


# -- implausible results ---------------------------------------------------------------------
def _final(curve: Curve) -> float | None:
    finite = curve.finite()
    return finite.tail_mean(max(1, len(finite) // 10))


def check_implausible(
    experiment: Experiment,
    base_values: Sequence[float],
    direction: Direction,
    loss: Curve | None,
    baseline_losses: Sequence[Curve],
    options: ReporterOptions,
    sigma: float | None = None,
) -> Anomaly | None:
    """The decisive metric beats main by more than ``implausible_sigmas`` noise bands while
    the training loss (``options.metric``) ends where the baselines' does.

    That pattern is what a patch that rescales its printed metric looks like. ``sigma`` is the
    baseline noise; by default the standard deviation of ``base_values``, and never less than
    ``min_rel_noise`` of the base value.
    """
    result = experiment.result
    if result is None or not base_values or loss is None or not baseline_losses:
        return None
    base = statistics.fmean(base_values)
    if sigma is None:
        sigma = statistics.stdev(base_values) if len(base_values) > 1 else 0.0
    noise = max(sigma, abs(base) * options.min_rel_noise, 1e-12)
    gain = direction.improvement(result.value, base)
    if not math.isfinite(result.value) or gain <= options.implausible_sigmas * noise:
        return None
    mine = _final(loss)
    theirs = [f for c in baseline_losses if (f := _final(c)) is not None]
    if mine is None or not theirs:
        return None
    ref = statistics.median(theirs)
    change = abs(mine - ref) / max(abs(ref), 1e-12)
    if change > options.loss_unchanged_tol:
        return None
    trust = "" if result.trusted else "; the number was read from the program's own output"
    return Anomaly(
        experiment.id, IMPLAUSIBLE,
        f"{result.metric} improved by {_fmt(gain)} ({gain / noise:.0f} sigma, sigma = "
        f"{_fmt(noise)}) but final {options.metric} {_fmt(mine)} is within "
        f"{change:.1%} of the baselines' {_fmt(ref)}: the patch may rescale its printed "
        f"metric{trust}",
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
    base_values: Sequence[float] = (),
    sigma: float | None = None,
    direction: Direction = Direction.MINIMIZE,
) -> list[Anomaly]:
    """Every check that applies to ``experiment`` given what is known now.

    ``direction`` is the decisive metric's. Baseline runs are compared with nothing, but their
    NaN, stall and crash checks still apply.
    """
    found = check_values(experiment.id, curves)
    is_base = experiment.role == "baseline"
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
            found.append(Anomaly(
                experiment.id, NAN, f"{experiment.result.metric} is {experiment.result.value}"
            ))
        else:
            odd = check_implausible(
                experiment, base_values, direction, loss, base_loss, options, sigma
            )
            if odd:
                found.append(odd)
    return found

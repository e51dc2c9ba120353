"""The noise gate: how much better than ``main`` a candidate must be to be promoted.

All numbers are derived from the experiment records, never kept only in memory:

- ``main``'s score on some code is the mean of the runs of that code: its baseline runs, or,
  after a promotion, the promoted candidate's own runs;
- the noise ``sigma`` is the pooled standard deviation of every group of runs of one code
  (baseline seeds, a candidate and its confirmation seeds), floored at ``min_sigma``;
- a candidate's first run *passes the screen* when it beats main's mean by more than
  ``max(min_delta, k * sigma)``; it is then re-run with ``confirm_runs`` more seeds;
- it is *promoted* when the mean of its runs beats main's mean by more than
  ``max(min_delta, k * se)``, where ``se = sigma * sqrt(1/n + 1/m)`` is the standard error of the
  difference of the two means (n candidate runs, m main runs) and ``k`` is ``k_sigma`` turned
  into a Student's t quantile for the degrees of freedom sigma rests on;
- confirmation runs get *fresh* seeds: never used by main's runs of the candidate's base code
  nor by any run of the candidate's code (:func:`fresh_seeds`);
- a win *costs more compute* only when its CPU seconds per run (training and evaluation, the
  whole job) exceed main's by more than ``k`` standard errors of that difference, measured
  against the runs of main nearest in time (:func:`compare_cost`), so that machine load
  drifting through a session is not taken for compute.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

import attrs

from autolab_core.config import PromotionSection
from autolab_core.models import Direction, Experiment, ExperimentStatus
from autolab_core.vocab import Role
from autolab_core.vocab import Verdict as Decision


@attrs.frozen
class Verdict:
    """The gate's comparison of a candidate's runs with main's (not the policy's decision)."""

    passed: bool
    effect: float  # positive = better than main
    err: float
    threshold: float
    n: int
    m: int

    def describe(self, metric: str) -> str:
        sign = "better" if self.effect > 0 else "worse"
        return (
            f"{metric} {abs(self.effect):.4g} {sign} than main (± {self.err:.2g}, {self.n} vs "
            f"{self.m} runs; needed > {self.threshold:.3g})"
        )


def runs_of(experiments: Iterable[Experiment], candidate_id: str) -> list[Experiment]:
    """A candidate and its confirmation runs that finished with a result."""
    return [
        e for e in experiments
        if (e.id == candidate_id or (e.role == Role.CONFIRM and e.parent == candidate_id))
        and e.status is ExperimentStatus.FINISHED and e.result is not None
    ]


def values(runs: Iterable[Experiment]) -> list[float]:
    """The metric values of ``runs`` that have a result."""
    return [e.result.value for e in runs if e.result is not None]


def main_runs(experiments: Sequence[Experiment], code: str) -> list[Experiment]:
    """The finished runs that measure ``main`` when its code hashes to ``code``."""
    out = [
        e for e in experiments
        if e.role == Role.BASELINE and e.base_code == code
        and e.status is ExperimentStatus.FINISHED and e.result is not None
    ]
    for cand in experiments:
        if cand.role == Role.CANDIDATE and cand.verdict == Decision.PROMOTED and cand.code_hash == code:
            out += runs_of(experiments, cand.id)
    return out


def pooled_noise(experiments: Sequence[Experiment], floor: float = 0.0) -> tuple[float, int] | None:
    """``(sigma, degrees of freedom)``: the pooled seed-to-seed standard deviation over every
    group of runs of the same code (floored at ``floor``), and how many independent deviations
    it rests on; None before any group has two runs."""
    groups: dict[str, list[float]] = defaultdict(list)
    for e in experiments:
        if e.status is not ExperimentStatus.FINISHED or e.result is None:
            continue
        if e.role == Role.BASELINE:
            groups[f"main:{e.base_code}"].append(e.result.value)
        elif e.role in (Role.CANDIDATE, Role.CONFIRM):
            groups[f"cand:{e.parent if e.role == Role.CONFIRM else e.id}"].append(e.result.value)
    ss, df = 0.0, 0
    for vals in groups.values():
        if len(vals) > 1:
            mean = statistics.fmean(vals)
            ss += sum((v - mean) ** 2 for v in vals)
            df += len(vals) - 1
    if df == 0:
        return None
    return max(math.sqrt(ss / df), floor), df


def pooled_sigma(experiments: Sequence[Experiment], floor: float = 0.0) -> float | None:
    """Pooled seed-to-seed standard deviation over every group of runs of the same code."""
    found = pooled_noise(experiments, floor)
    return None if found is None else found[0]


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher
    expansion of Abramowitz & Stegun 26.7.5 (within 0.5% of exact for df >= 3, p <= 0.99)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    z = statistics.NormalDist().inv_cdf(p)
    g = ((z**3 + z) / 4,
         (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def judge(
    candidate: Sequence[float],
    main: Sequence[float],
    sigma: float,
    direction: Direction,
    rules: PromotionSection,
    screen: bool,
    df: int | None = None,
) -> Verdict:
    """Screen (one run, threshold k*sigma) or confirm (means, threshold k*se).

    With ``df``, the degrees of freedom sigma was estimated with, the confirmation's k is the
    Student's t quantile of the same one-sided level as ``k_sigma`` is for a normal (sigma
    estimated from few runs is often too small: 2 sigma would let ~3.5% of identical code
    through with 3 runs of main, see benchmarks/bench_gate_aa.py).
    """
    effect = direction.improvement(statistics.fmean(candidate), statistics.fmean(main))
    n, m = len(candidate), len(main)
    err = sigma * math.sqrt(1 / n + 1 / m)
    scale = sigma if screen else err
    k = rules.k_sigma
    if df is not None and not screen:
        k = max(k, t_quantile(statistics.NormalDist().cdf(k), df))
    threshold = max(rules.min_delta, k * scale)
    return Verdict(effect > threshold, effect, err, threshold, n, m)


# -- seeds -------------------------------------------------------------------------------------
def seeds_used(experiments: Iterable[Experiment], codes: Iterable[str | None]) -> set[int]:
    """Seeds already given (in any state) to runs of any of ``codes``: runs whose code hashes to
    one of them, and main's baselines on them."""
    wanted = {c for c in codes if c}
    return {e.seed for e in experiments
            if e.code_hash in wanted or (e.role == Role.BASELINE and e.base_code in wanted)}


def fresh_seeds(used: set[int], n: int) -> list[int]:
    """The ``n`` smallest seeds not in ``used`` (deterministic: the records decide)."""
    out: list[int] = []
    seed = 0
    while len(out) < n:
        if seed not in used:
            out.append(seed)
        seed += 1
    return out


def confirm_seeds(experiments: Sequence[Experiment], cand: Experiment, n: int) -> list[int]:
    """Fresh seeds for ``cand``'s confirmation runs: unused by main's runs of its base code and
    by every run of its own code (its first run, earlier confirmations, duplicates)."""
    used = seeds_used(experiments, (cand.base_code, cand.code_hash))
    used |= {e.seed for e in experiments if e.id == cand.id or e.parent == cand.id}
    return fresh_seeds(used, n)


# -- compute -----------------------------------------------------------------------------------
def cpu_seconds(exp: Experiment) -> float | None:
    """CPU seconds of the whole run (training plus evaluation, and what they started), or None
    when the run reported none."""
    extra = exp.result.extra if exp.result is not None else {}
    if "train_cpu_seconds" not in extra:
        return None
    return float(extra["train_cpu_seconds"]) + float(extra.get("eval_cpu_seconds", 0.0))


def nearest_in_time(main: Sequence[Experiment], runs: Sequence[Experiment],
                    count: int) -> list[Experiment]:
    """The ``count`` runs of ``main`` that finished nearest in time to ``runs`` (the machine's
    load then was most like theirs)."""
    def when(e: Experiment) -> float:
        return e.at(ExperimentStatus.FINISHED) or e.at(ExperimentStatus.STARTED) or 0.0
    if not runs:
        return list(main)[:count]
    centre = statistics.fmean(when(e) for e in runs)
    return sorted(main, key=lambda e: (abs(when(e) - centre), e.id))[:count]


@attrs.frozen
class CostVerdict:
    """A candidate's CPU seconds per run against main's, with the noise of that difference."""

    extra_seconds: float  # mean candidate CPU minus mean main CPU, per run
    increase: float  # extra_seconds relative to main's mean
    err: float  # standard error of the difference (Welch)
    noise: float  # k_sigma * err, in seconds
    min_seconds: float  # a smaller difference is timing noise on short runs
    n: int
    m: int

    @property
    def significant(self) -> bool:
        """More CPU than main beyond timing noise and load drift."""
        return self.extra_seconds > self.noise and self.extra_seconds >= self.min_seconds

    def describe(self) -> str:
        return (f"{100 * self.increase:.0f}% more CPU per run than main (+{self.extra_seconds:.3g} s "
                f"± {self.err:.2g} s, {self.n} vs {self.m} runs)")


def compare_cost(candidate: Sequence[float], main: Sequence[float],
                 rules: PromotionSection) -> CostVerdict | None:
    """The noise-aware cost comparison, or None when a side has no CPU numbers.

    The difference is significant when it exceeds ``k_sigma`` standard errors (Welch: each
    side's own variance; a side with one run borrows the other's) and is at least
    ``min_cost_seconds``.
    """
    if not candidate or not main or statistics.fmean(main) <= 0:
        return None
    n, m = len(candidate), len(main)
    var_c = statistics.variance(candidate) if n > 1 else None
    var_m = statistics.variance(main) if m > 1 else None
    var_c = var_c if var_c is not None else (var_m or 0.0)
    var_m = var_m if var_m is not None else var_c
    err = math.sqrt(var_c / n + var_m / m)
    extra = statistics.fmean(candidate) - statistics.fmean(main)
    return CostVerdict(extra, extra / statistics.fmean(main), err, rules.k_sigma * err,
                       rules.min_cost_seconds, n, m)

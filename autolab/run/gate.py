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
  difference of the two means (n candidate runs, m main runs).
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


def pooled_sigma(experiments: Sequence[Experiment], floor: float = 0.0) -> float | None:
    """Pooled seed-to-seed standard deviation over every group of runs of the same code."""
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
    return max(math.sqrt(ss / df), floor)


def judge(
    candidate: Sequence[float],
    main: Sequence[float],
    sigma: float,
    direction: Direction,
    rules: PromotionSection,
    screen: bool,
) -> Verdict:
    """Screen (one run, threshold k*sigma) or confirm (means, threshold k*se)."""
    effect = direction.improvement(statistics.fmean(candidate), statistics.fmean(main))
    n, m = len(candidate), len(main)
    err = sigma * math.sqrt(1 / n + 1 / m)
    scale = sigma if screen else err
    threshold = max(rules.min_delta, rules.k_sigma * scale)
    return Verdict(effect > threshold, effect, err, threshold, n, m)

"""Early stopping: prune a running candidate whose curve is clearly behind its peers.

Off by default (``[reporter] early_stopping = "off"``). Baseline runs are never pruned (they
measure main's noise), nor are confirmation seeds (the promotion decision needs their full
result). The orchestrator calls, for each running experiment::

    decide(experiment, curve, peers, options, total_steps=None) -> PruneDecision | None

``curve`` is the experiment's curve of ``options.metric`` and ``peers`` the same metric's
curves of the other experiments, in any state, keyed by experiment id: a peer counts at a step
once its curve reaches that step. Rules:

* ``median`` (median stopping, Golovin et al. 2017): after ``min_steps``, prune when the
  candidate's current value (mean of its last ``smooth`` points) is worse than the median of
  the peers' values at the same step, with at least ``min_peers`` peers there. (The original
  rule compares running averages over the whole curve, which for a falling loss almost never
  prunes; comparing at the same step does.)
* ``halving`` (asynchronous successive halving): rungs at ``min_steps * eta**k`` (or
  ``halving_rungs``). At the highest rung the candidate has reached, it must rank in the top
  ``1/eta`` of the runs that reached that rung (at least ``eta`` of them, itself included).

:class:`PruneDecision` carries the step, the reason and the compute saved: the steps left to
``total_steps`` (default: the longest peer curve) and those steps at the run's own pace. A run
that already reached that step is never pruned: it is being evaluated, and stopping it would
save nothing and lose its score.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

import attrs

from autolab.reporting.curves import Curve
from autolab.reporting.options import ReporterOptions
from autolab_core.models import Experiment, ExperimentStatus
from autolab_core.vocab import Role

EXEMPT_ROLES = frozenset({Role.BASELINE, Role.CONFIRM})


@attrs.frozen
class PruneDecision:
    experiment_id: str
    step: int
    rule: str  # "median" or "halving"
    reason: str
    saved_steps: int = 0
    saved_seconds: float | None = None


def _saved(curve: Curve, step: int, peers: Mapping[str, Curve], total: int | None
           ) -> tuple[int, float | None]:
    if total is None:
        total = max((c.last_step for c in peers.values() if c.last_step is not None), default=step)
    steps = max(0, total - step)
    pace = curve.seconds_per_step()
    return steps, (None if pace is None else steps * pace)


def _peer_values(peers: Mapping[str, Curve], own: str, step: int, n: int) -> list[float]:
    vals = []
    for exp_id, c in peers.items():
        if exp_id == own or c.last_step is None or c.last_step < step:
            continue
        v = c.finite().smoothed_at(step, n)
        if v is not None:
            vals.append(v)
    return vals


def _rungs(options: ReporterOptions, upto: int) -> list[int]:
    if options.halving_rungs:
        return sorted(r for r in options.halving_rungs if r <= upto)
    base = max(1, options.min_steps)
    rungs, r = [], base
    while r <= upto:
        rungs.append(r)
        r *= options.halving_eta
    return rungs


def decide(
    experiment: Experiment,
    curve: Curve | None,
    peers: Mapping[str, Curve],
    options: ReporterOptions,
    total_steps: int | None = None,
) -> PruneDecision | None:
    """Whether to stop ``experiment`` now, by the rule ``options.early_stopping`` names."""
    rule = options.early_stopping
    if rule == "off" or experiment.role in EXEMPT_ROLES or curve is None:
        return None
    if experiment.status not in (ExperimentStatus.STARTED, ExperimentStatus.SUBMITTED):
        return None
    mine = curve.finite()
    if mine.last_step is None or mine.last_step < options.min_steps:
        return None
    direction, name, n = options.direction, options.metric, options.smooth
    if rule == "median":
        step = mine.last_step
        value = mine.tail_mean(n)
        others = _peer_values(peers, experiment.id, step, n)
        if value is None or len(others) < options.min_peers:
            return None
        median = statistics.median(others)
        if not direction.better(median, value):
            return None
        reason = (f"median rule: {name} {value:.4g} at step {step} is worse than the median "
                  f"{median:.4g} of {len(others)} peers at that step")
    elif rule == "halving":
        rungs = _rungs(options, mine.last_step)
        if not rungs:
            return None
        step = rungs[-1]
        value = mine.smoothed_at(step, n)
        others = _peer_values(peers, experiment.id, step, n)
        if value is None or len(others) + 1 < options.halving_eta:
            return None
        total = len(others) + 1
        keep = max(1, total // options.halving_eta)
        rank = sum(1 for v in others if direction.better(v, value)) + 1
        if rank <= keep:
            return None
        reason = (f"successive halving: {name} {value:.4g} ranks {rank} of {total} at "
                  f"rung {step}; only the top {keep} (1/{options.halving_eta}) continue")
    else:  # parse_options rejects other values
        return None
    saved_steps, saved_seconds = _saved(mine, mine.last_step, peers, total_steps)
    if saved_steps <= 0:
        return None  # it trained to the end: stopping it now saves nothing and loses its score
    return PruneDecision(experiment.id, mine.last_step, rule, reason, saved_steps, saved_seconds)

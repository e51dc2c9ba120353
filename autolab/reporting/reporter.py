"""One call per orchestrator tick: new anomaly flags and prune decisions for the lab.

API::

    review(experiments, metrics, options, *, now, direction=Direction.MINIMIZE,
           job_states=None, log_tails=None, max_peers=200) -> Review(anomalies, prunes)

``metrics`` is a metric store (or a table / MetricPoints); only the curves needed are queried:
``options.metric`` and ``options.throughput_metric`` of the running experiments, of those in
``job_states`` (jobs that just ended: pass their final :class:`JobState` and optionally the log
tail), of the finished baseline runs on the same base (``Experiment.base_key``) and of up to ``max_peers``
recent experiments on it (the early-stopping peers). A flag an experiment already carries in
``Experiment.flags`` is not reported again. The orchestrator copies ``anomaly.flag`` into
``Experiment.flags`` (which blocks promotion, see :func:`.anomalies.needs_human`) and stops the
experiments in ``prunes`` with status ``PRUNED`` and the decision's reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab.reporting.anomalies import Anomaly, detect
from autolab.reporting.curves import Curve, curves_from
from autolab.reporting.early_stopping import PruneDecision, decide
from autolab.reporting.options import ReporterOptions
from autolab_core.models import Direction, Experiment, ExperimentStatus, JobState


@attrs.frozen
class Review:
    anomalies: list[Anomaly]
    prunes: list[PruneDecision]


def _last_at(e: Experiment) -> float:
    return e.history[-1].at if e.history else 0.0


def review(
    experiments: Sequence[Experiment],
    metrics: Any,
    options: ReporterOptions,
    *,
    now: float,
    direction: Direction = Direction.MINIMIZE,
    job_states: Mapping[str, JobState] | None = None,
    log_tails: Mapping[str, str] | None = None,
    max_peers: int = 200,
) -> Review:
    """Check running and just-ended experiments; decide which running ones to prune."""
    job_states = dict(job_states or {})
    log_tails = dict(log_tails or {})
    targets = [e for e in experiments
               if e.status is ExperimentStatus.STARTED or e.id in job_states]
    if not targets:
        return Review([], [])
    commits = {e.base_key for e in targets}
    same_main = [e for e in experiments if e.base_key in commits]
    baselines = [e for e in same_main
                 if e.role == "baseline" and e.status is ExperimentStatus.FINISHED]
    peers = sorted((e for e in same_main if e.status in (
        ExperimentStatus.STARTED, ExperimentStatus.FINISHED, ExperimentStatus.PRUNED)),
        key=_last_at)[-max_peers:]
    ids = list(dict.fromkeys([*(e.id for e in targets), *(e.id for e in baselines),
                              *(e.id for e in peers)]))
    curves = curves_from(metrics, ids, None)
    found: list[Anomaly] = []
    prunes: list[PruneDecision] = []
    for e in targets:
        base = [b for b in baselines if b.base_key == e.base_key]
        base_curves = [curves.get(b.id, {}) for b in base]
        base_values = [b.result.value for b in base if b.result is not None]
        for a in detect(e, curves.get(e.id, {}), base_curves, options=options, now=now,
                        job_state=job_states.get(e.id), log_tail=log_tails.get(e.id, ""),
                        base_values=base_values, direction=direction):
            if a.flag not in e.flags and not any(
                    x.experiment_id == a.experiment_id and x.flag == a.flag for x in found):
                found.append(a)
        if e.status is ExperimentStatus.STARTED:
            peer_curves: dict[str, Curve] = {
                p.id: c for p in peers if p.base_key == e.base_key and p.id != e.id
                and (c := curves.get(p.id, {}).get(options.metric)) is not None}
            d = decide(e, curves.get(e.id, {}).get(options.metric), peer_curves, options)
            if d is not None:
                prunes.append(d)
    return Review(found, prunes)

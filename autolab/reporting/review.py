"""The Reporter's per-tick review: new anomaly flags and prune decisions for the lab.

The run loop holds one :class:`Reporter` (``Reporter.from_config(config, store)``) and calls
:meth:`Reporter.tick` once per poll with the experiments (at most every ``interval`` seconds it
reviews the running ones) and :meth:`Reporter.flags_on_finish` once per finished job. Both feed
the pure function below the lab's data and return flags as stored strings (``"<kind>: <reason>"``,
see :class:`autolab_core.vocab.Flag`).

API::

    review(experiments, metrics, options, *, now, direction=Direction.MINIMIZE,
           job_states=None, log_tails=None, max_peers=200) -> Review(anomalies, prunes)

``metrics`` is a metric store (or a table / MetricPoints); only the curves needed are queried:
``options.metric`` and ``options.throughput_metric`` of the running experiments, of those in
``job_states`` (jobs that just ended: pass their final :class:`JobState` and optionally the log
tail), of the finished baseline runs on the same base (``Experiment.base_key``) and of up to ``max_peers``
recent experiments on it (the early-stopping peers). A flag an experiment already carries in
``Experiment.flags`` is not reported again. The loop copies ``as_flag(anomaly)`` into
``Experiment.flags`` (a blocking kind holds promotion, see :func:`autolab_core.vocab.needs_human`)
and stops the experiments in ``prunes`` with status ``PRUNED`` and the decision's reason. A
candidate that ended with a trusted result is also checked against main's trusted results
(:func:`.anomalies.trusted_main`) for an implausible win.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab.reporting.anomalies import Anomaly, as_flag, detect, trusted_main
from autolab.reporting.curves import Curve, curves_from
from autolab.reporting.early_stopping import PruneDecision, decide
from autolab.reporting.options import ReporterOptions, parse_reporter_options
from autolab_core.config import Config
from autolab_core.models import Direction, Experiment, ExperimentStatus, JobState
from autolab_core.vocab import Role, kinds


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
                 if e.role == Role.BASELINE and e.status is ExperimentStatus.FINISHED]
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
        judged = e.role == Role.CANDIDATE and e.result is not None and e.result.trusted
        main = trusted_main(experiments, e, direction) if judged else None
        seen = kinds(e.flags)
        for a in detect(e, curves.get(e.id, {}), base_curves, options=options, now=now,
                        job_state=job_states.get(e.id), log_tail=log_tails.get(e.id, ""),
                        main=main, direction=direction):
            if a.flag not in seen and not any(
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


@attrs.frozen
class TickResult:
    flags: dict[str, list[str]]  # experiment id -> new flags ("<kind>: <reason>")
    prunes: dict[str, str]  # experiment id -> "pruned: <reason>"


class Reporter:
    """The Reporter role inside the run loop: remembers the store, the options and when it
    last looked."""

    def __init__(self, options: ReporterOptions, direction: Direction, store: Any,
                 interval: float = 5.0) -> None:
        self.options = options
        self.direction = direction
        self.store = store
        self.interval = interval
        self._last = 0.0

    @classmethod
    def from_config(cls, config: Config, store: Any) -> Reporter:
        return cls(parse_reporter_options(config.reporter), config.metric.dir, store)

    def tick(self, experiments: Sequence[Experiment], now: float | None = None) -> TickResult:
        """New flags and prune decisions for running experiments (throttled)."""
        now = time.time() if now is None else now
        if now - self._last < self.interval:
            return TickResult({}, {})
        self._last = now
        self.store.flush()  # review reads what the store holds
        found = review(experiments, self.store, self.options, now=now, direction=self.direction)
        flags: dict[str, list[str]] = {}
        for anomaly in found.anomalies:
            flags.setdefault(anomaly.experiment_id, []).append(as_flag(anomaly))
        prunes = {d.experiment_id: f"pruned: {d.reason}" for d in found.prunes}
        return TickResult(flags, prunes)

    def flags_on_finish(self, exp: Experiment, state: JobState,
                        experiments: Sequence[Experiment]) -> list[str]:
        """Flags for one job that just ended (crash class, NaN, implausible win)."""
        self.store.flush()
        others = [e for e in experiments if e.id != exp.id]
        found = review([*others, exp], self.store, self.options, now=time.time(),
                       direction=self.direction, job_states={exp.id: state})
        return [as_flag(a) for a in found.anomalies if a.experiment_id == exp.id]

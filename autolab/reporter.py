"""The Reporter's hooks into the run loop: anomaly flags and early stopping.

The orchestrator calls :meth:`Reporter.tick` once per poll with the running experiments (at
most every ``interval`` seconds it reviews them: new anomaly flags, prune decisions) and
:meth:`Reporter.flags_on_finish` once per finished job. The rules live in
:mod:`autolab.reporting` (``anomalies``, ``early_stopping``, ``reporter.review``); this class
only feeds them the lab's data and remembers what it already said.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs

from autolab.reporting.anomalies import as_flag
from autolab.reporting.options import ReporterOptions, parse_reporter_options
from autolab.reporting.reporter import review
from autolab_core.config import Config
from autolab_core.models import Direction, Experiment, JobState


@attrs.frozen
class TickResult:
    flags: dict[str, list[str]]  # experiment id -> new flags
    prunes: dict[str, str]  # experiment id -> "pruned: <reason>"


class Reporter:
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
        self.store.flush()
        others = [e for e in experiments if e.id != exp.id]
        found = review([*others, exp], self.store, self.options, now=time.time(),
                       direction=self.direction, job_states={exp.id: state})
        return [as_flag(a) for a in found.anomalies if a.experiment_id == exp.id]

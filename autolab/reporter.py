"""The Reporter's hooks into the run loop: anomaly flags and early stopping.

The orchestrator calls :meth:`Reporter.on_points` with every batch of metric points it reads,
:meth:`Reporter.should_prune` for each running job on every poll, and
:meth:`Reporter.flags_on_finish` once per finished job. The rules themselves live in
:mod:`autolab.reporting`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from autolab_core.config import Config
from autolab_core.models import Experiment, JobState, JobStatus, MetricPoint


class Reporter:
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.bad_values: dict[str, list[str]] = defaultdict(list)

    @classmethod
    def from_config(cls, config: Config) -> Reporter:
        return cls(config.reporter)

    def on_points(self, exp: Experiment, points: Sequence[MetricPoint]) -> None:
        for p in points:
            if not math.isfinite(p.value) and len(self.bad_values[exp.id]) < 1:
                self.bad_values[exp.id].append(f"nan: {p.name} is {p.value} at step {p.step}")

    def should_prune(self, exp: Experiment, experiments: Sequence[Experiment]) -> str | None:
        return None

    def flags_on_finish(
        self, exp: Experiment, state: JobState, experiments: Sequence[Experiment]
    ) -> list[str]:
        flags = list(self.bad_values.pop(exp.id, []))
        if state.status in (JobStatus.OOM, JobStatus.TIMEOUT, JobStatus.PREEMPTED):
            flags.append(f"crash: {state.status.value}: {state.reason or ''}".strip())
        return flags

"""The run spec of one attempt of an experiment, built in one place (:func:`run_spec`), and
what its outcome becomes in the record: the :class:`Result` of the runner's signed
:class:`RunResult` (:func:`to_result`), or a failure with its reason (:func:`failed_outcome`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import attrs

from autolab.seed_check import seed_env, seeded_argv
from autolab_core import guard
from autolab_core.config import resolve_python
from autolab_core.job import RunResult, RunSpec
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus, JobState, JobStatus, Result

_JOB_TO_EXP = {
    JobStatus.SUCCEEDED: ExperimentStatus.FINISHED,
    JobStatus.CANCELLED: ExperimentStatus.CANCELLED,
}


def run_spec(lab: Lab, exp: Experiment) -> RunSpec:
    """What the runner (``python -m autolab_core.runner``) must do for this attempt of ``exp``:
    the seeded commands, ``[run] python``, the seed variables, the protected files and pinned
    data (checked against the pins here), in the ``[run] isolation`` sandbox (default: the
    strongest available)."""
    cfg = lab.config
    spec = guard.run_spec(lab, exp.id, exp.base_commit, exp.seed, exp.attempts,
                          isolation=cfg.run.isolation, network=cfg.run.network)
    return dataclasses.replace(
        spec, train=list(seeded_argv(spec.train, exp.seed)),
        env={**(spec.env or {}), **seed_env(exp.seed, cfg.run.seed_env),
             # git run in the exported tree never finds the lab's repository above it
             "GIT_CEILING_DIRECTORIES": str(lab.state_dir / "jobs")},
        # The interpreter whose bin directory the runner puts first on PATH (None: its own).
        python=None if cfg.run.python is None else resolve_python(cfg.run.python))


def to_result(run: RunResult) -> Result:
    """The record's :class:`Result` of a signed :class:`RunResult`."""
    extra = dict(run.extra)
    for name in ("train_cpu_seconds", "eval_seconds", "eval_cpu_seconds"):
        value = getattr(run, name)
        if value is not None:
            extra[name] = float(value)
    return Result(metric=run.metric, value=float(run.value), seed=run.seed,
                  train_seconds=run.train_seconds, eval_hash=run.eval_hash, trusted=run.trusted,
                  extra=extra)


def is_pruned(exp: Experiment) -> bool:
    """Whether the Reporter stopped ``exp`` early (its reason says so until it ends)."""
    return exp.reason is not None and exp.reason.startswith("pruned")


def failed_outcome(exp: Experiment, state: JobState, hardware: Mapping[str, Any],
                   cost: float) -> Experiment:
    """``exp`` ended without a result: pruned, cancelled or failed, with the reason."""
    status = (ExperimentStatus.PRUNED if is_pruned(exp) else
              _JOB_TO_EXP.get(state.status, ExperimentStatus.FAILED))
    reason = exp.reason or state.reason or state.status.value
    if state.status is JobStatus.SUCCEEDED:
        reason = exp.reason or "the job succeeded but printed no result line"
    if status is ExperimentStatus.FAILED and state.status is not JobStatus.FAILED:
        reason = f"{state.status.value}: {reason}"
    exp = attrs.evolve(exp, hardware=dict(hardware), cost_usd=cost, reason=reason,
                       verdict=status.value)
    return exp.with_status(status, reason, at=state.finished_at)

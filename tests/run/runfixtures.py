"""Helpers for the unit tests of autolab.run: finished experiments on a real toy lab (no jobs)."""

from __future__ import annotations

from typing import Any

import attrs

from autolab.run.ledger import Ledger
from autolab_core import hookimpl
from autolab_core.lab import BRANCH_PREFIX
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, Result
from autolab_core.vocab import Role


class HookLog:
    """A plugin that remembers every lifecycle hook call (registered on a real PluginManager)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def autolab_experiment_finished(self, lab: Any, experiment: Any) -> None:
        self.calls.append(("finished", {"experiment": experiment.id}))

    @hookimpl
    def autolab_change_promoted(self, lab: Any, experiment: Any, commit: str,
                                improvement: float) -> None:
        self.calls.append(("promoted", {"experiment": experiment.id, "commit": commit,
                                        "improvement": improvement}))

    @hookimpl
    def autolab_anomaly(self, lab: Any, experiment: Any, flag: str, reason: str) -> None:
        self.calls.append(("anomaly", {"experiment": experiment.id, "flag": flag}))


def finished(exp: Experiment, value: float, cpu: float | None = None) -> Experiment:
    extra = {} if cpu is None else {"train_cpu_seconds": cpu}
    result = Result(metric="val_bpb", value=value, seed=exp.seed, extra=extra)
    return attrs.evolve(exp, result=result).with_status(ExperimentStatus.FINISHED)


def baselines(ledger: Ledger, values: list[float], cpu: float | None = None) -> list[Experiment]:
    out = []
    for seed, value in enumerate(values):
        h = Hypothesis(id=f"baseline-{seed}", title=f"baseline {seed}", source="baseline")
        exp = ledger.new(h, Role.BASELINE, seed=seed)
        out.append(ledger.put(finished(attrs.evolve(exp, code_hash=exp.base_code), value, cpu)))
    return out


def candidate(ledger: Ledger, value: float, lr: str = "0.02", cpu: float | None = None,
              flags: tuple[str, ...] = ()) -> Experiment:
    """A candidate that changed LR on its own branch, finished with ``value``."""
    lab = ledger.lab
    h = Hypothesis(id=f"lr-{lr}", title=f"LR -> {lr}", changes={"LR": float(lr)})
    exp = ledger.new(h, Role.CANDIDATE)
    train = lab.files_at(exp.base_commit, ["train.py"])["train.py"]
    branch = f"{BRANCH_PREFIX}{exp.id}"
    commit = lab.create_branch(branch, exp.base_commit,
                               {"train.py": train.replace("LR = 0.01", f"LR = {lr}")}, h.title)
    exp = attrs.evolve(exp, branch=branch, commit=commit, flags=flags,
                       code_hash=lab.files_hash(commit, ledger.code_paths))
    return ledger.put(finished(exp, value, cpu))

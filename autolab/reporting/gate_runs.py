"""The noise gate's groups of runs, indexed once for a large lab.

``gate.runs_of`` and ``gate.main_runs`` scan every experiment on each call; the leaderboard and
the implausible-win rule call them once per candidate. :class:`GateRuns` calls the very same
functions, on the few runs each can return, so 10,000 experiments take one pass.

API::

    runs = GateRuns.of(experiments)
    runs.of_candidate(candidate) -> list[Experiment]   # == gate.runs_of(experiments, id)
    runs.of_main(code) -> list[Experiment]              # == gate.main_runs(experiments, code)
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from autolab.run import gate
from autolab_core.models import Experiment
from autolab_core.vocab import Role, Verdict


@attrs.frozen
class GateRuns:
    confirms: dict[str, list[Experiment]]  # candidate id -> its confirmation seeds
    main_measures: list[Experiment]  # baselines, promoted candidates and their seeds

    @classmethod
    def of(cls, experiments: Sequence[Experiment]) -> GateRuns:
        confirms: dict[str, list[Experiment]] = {}
        for e in experiments:
            if e.role == Role.CONFIRM and e.parent:
                confirms.setdefault(e.parent, []).append(e)
        measures: list[Experiment] = []
        for e in experiments:
            if e.role == Role.BASELINE:
                measures.append(e)
            elif e.role == Role.CANDIDATE and e.verdict == Verdict.PROMOTED:
                measures += [e, *confirms.get(e.id, ())]
        return cls(confirms, measures)

    def of_candidate(self, candidate: Experiment) -> list[Experiment]:
        """The candidate and its confirmation seeds that finished with a result."""
        return gate.runs_of([candidate, *self.confirms.get(candidate.id, ())], candidate.id)

    def of_main(self, code: str) -> list[Experiment]:
        """The finished runs that measure main when its code hashes to ``code``."""
        return gate.main_runs(self.main_measures, code)

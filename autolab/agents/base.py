"""What the roles exchange. Agents are written against these and ``autolab_core`` alone.

A *Researcher* (``Proposer``) turns the lab's digest into hypotheses. A *Worker*
(``PatchWriter``) turns one hypothesis into new contents for the editable files. The Planner
(:mod:`autolab.agents.planner`) sits between them and dedups and ranks. The knob explorer
implements both roles without an LLM; the LLM roles implement them with one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs

from autolab_core.models import Direction, Experiment, Hypothesis


@attrs.frozen
class LabDigest:
    """What a Researcher sees: main's editable files and every experiment so far."""

    metric: str
    direction: Direction
    files: Mapping[str, str]  # editable path -> content on main
    experiments: Sequence[Experiment]
    best_value: float | None = None
    sigma: float | None = None
    main_commit: str = ""
    code_hash: str = ""  # hash of main's code files; experiments with this base_code are current


class Proposer(Protocol):
    """The Researcher role."""

    def propose(self, digest: LabDigest, n: int) -> list[Hypothesis]:
        """Up to ``n`` new hypotheses; an empty list when it has no more ideas."""
        ...


class PatchWriter(Protocol):
    """The Worker role's thinking part: one hypothesis -> one single-change edit.

    Returns the new full contents of each editable file it changes. Raises
    ``autolab_core.PatchError`` with a reason when it cannot produce a valid edit.
    """

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        ...

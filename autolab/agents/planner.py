"""The Planner: rejects duplicate and stale ideas against every past, queued and running
experiment, and orders what is left.

A hypothesis is checked twice: before a patch is written (same knob and value, near-identical
text) and after (the resulting code is identical to main's or to another experiment's). The
code is compared by the hash of the lab's code files (editable and protected), which is the
resulting git tree restricted to code, so records committed to ``main`` do not hide a duplicate.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from autolab_core.models import Experiment, ExperimentStatus, Hypothesis

TEXT_SIMILARITY = 0.92
_WORDS = re.compile(r"[a-z0-9.]+")


def _norm(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def _same_changes(a: Hypothesis, b: Hypothesis) -> bool:
    if not a.changes or not b.changes:
        return False
    return {k: repr(v) for k, v in a.changes.items()} == {k: repr(v) for k, v in b.changes.items()}


def _candidates(experiments: Iterable[Experiment]) -> list[Experiment]:
    return [
        e for e in experiments
        if e.role == "candidate" and e.status is not ExperimentStatus.REJECTED
    ]


def check_hypothesis(
    hypothesis: Hypothesis, experiments: Iterable[Experiment], code_hash: str
) -> str | None:
    """Why ``hypothesis`` should not be tried on code ``code_hash``, or None."""
    for exp in _candidates(experiments):
        same_code = exp.base_code == code_hash
        if not (same_code or not exp.done):
            continue
        if _same_changes(hypothesis, exp.hypothesis):
            what = "same knob and value"
        elif (
            hypothesis.source != "knob"
            and difflib.SequenceMatcher(
                None, _norm(hypothesis.title + " " + hypothesis.rationale),
                _norm(exp.hypothesis.title + " " + exp.hypothesis.rationale),
            ).ratio() >= TEXT_SIMILARITY
        ):
            what = "near-identical hypothesis"
        else:
            continue
        if exp.done and exp.verdict not in (None, "promoted"):
            return f"stale: {what} as {exp.id}, already tried on this code ({exp.verdict})"
        return f"duplicate of {exp.id}: {what}"
    return None


def check_code(
    code_hash: str, experiments: Iterable[Experiment], main_code: str, own_id: str = ""
) -> str | None:
    """Why a patch resulting in ``code_hash`` should not run, or None."""
    if code_hash == main_code:
        return "no change: the patch leaves the code identical to main"
    for exp in experiments:
        if exp.role == "confirm" or exp.status is ExperimentStatus.REJECTED:
            continue
        if exp.id != own_id and exp.code_hash == code_hash and exp.commit:
            return f"duplicate of {exp.id}: the same resulting code"
    return None

"""What the knob explorer tries after its first round of single-knob moves.

- **Pushes**: after a promotion moved knob K from ``a`` to ``b`` and main still has ``K = b``,
  K at the next step in the same direction (``b * b/a`` for scale moves, ``b + (b - a)`` for
  steps, the distance to 1 scaled again for betas), ahead of everything else.
- **Pairs**: two knobs changed at once, each at its best single move on the current code, when
  both singles were neutral-to-good (ran, not promoted, not clearly worse). A knob whose every
  single move was clearly worse (effect below ``-CLEARLY_WORSE`` standard errors) is never
  paired. Pairs are labelled ``pair:`` in the title and carry both changes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from autolab.agents.base import LabDigest
from autolab.agents.knobs.model import Knob, format_value
from autolab_core.models import Experiment, Hypothesis
from autolab_core.vocab import Role, Verdict

CLEARLY_WORSE = 2.0  # a single whose effect is below -2 standard errors is clearly worse
MAX_PAIRS = 20
_NEUTRAL = {Verdict.NOT_BETTER, Verdict.NOT_CONFIRMED, Verdict.FAILED_CONFIRMATION}
_MOVE = re.compile(r": (\S+) -> (\S+)")


def next_step(before: Any, after: Any) -> Any | None:
    """The value one more step along ``before -> after``; None when there is no direction."""
    if isinstance(before, bool) or isinstance(after, bool):
        return None
    if isinstance(before, int) and isinstance(after, int):
        if before > 0 and after > 0 and (after % before == 0 or before % after == 0):
            return max(1, after * after // before)
        return after + (after - before)
    if not isinstance(before, int | float) or not isinstance(after, int | float) or before == after:
        return None
    b, a = float(before), float(after)
    if 0.5 <= b < 1.0 and 0.5 <= a < 1.0:  # betas, momentum: scale the distance to 1 again
        return _round(1.0 - (1.0 - a) ** 2 / (1.0 - b))
    if b != 0.0 and (a / b) > 0:
        return _round(a * a / b)
    return _round(a + (a - b))


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _parse(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def promoted_moves(experiments: Sequence[Experiment]) -> dict[str, tuple[Any, Any]]:
    """knob -> (before, after) of its most recent promoted single-knob move."""
    out: dict[str, tuple[Any, Any]] = {}
    for exp in experiments:
        if exp.verdict != Verdict.PROMOTED or len(exp.hypothesis.changes) != 1:
            continue
        (name, value), = exp.hypothesis.changes.items()
        match = _MOVE.search(exp.hypothesis.title)
        if match:
            out[name] = (_parse(match.group(1)), value)
    return out


def pushes(digest: LabDigest, knobs: Sequence[Knob]) -> list[Hypothesis]:
    """One more step for every knob whose promoted move main still carries."""
    by_name = {k.name: k for k in knobs}
    out = []
    for name, (before, after) in promoted_moves(digest.experiments).items():
        knob = by_name.get(name)
        if knob is None or format_value(knob.value) != format_value(after):
            continue  # main moved on (or the knob is excluded)
        value = next_step(before, knob.value)
        if value is None or value == knob.value or (isinstance(knob.value, int) and value < 1 <= knob.value):
            continue
        out.append(Hypothesis(
            id=f"knob-{name}-{format_value(value)}",
            title=f"{name} push: {format_value(knob.value)} -> {format_value(value)}",
            rationale=(f"{name} {format_value(before)} -> {format_value(after)} was promoted; "
                       "one more step in the same direction"),
            source="knob",
            changes={name: value},
        ))
    return out


def _effect_ok(exp: Experiment) -> bool:
    if exp.effect is None:
        return True
    err = exp.effect_err or 0.0
    return exp.effect >= -CLEARLY_WORSE * err if err > 0 else exp.effect >= 0.0


def best_neutral_singles(digest: LabDigest, knobs: Sequence[Knob]) -> dict[str, tuple[Any, float]]:
    """knob -> (value, effect) of its best neutral-to-good single move on the current code."""
    names = {k.name for k in knobs}
    best: dict[str, tuple[Any, float]] = {}
    worse: set[str] = set()
    for exp in digest.experiments:
        if (exp.role != Role.CANDIDATE or exp.base_code != digest.code_hash or not exp.done
                or len(exp.hypothesis.changes) != 1):
            continue
        (name, value), = exp.hypothesis.changes.items()
        if name not in names:
            continue
        if exp.verdict not in _NEUTRAL or not _effect_ok(exp):
            worse.add(name)
            continue
        effect = exp.effect if exp.effect is not None else 0.0
        if name not in best or effect > best[name][1]:
            best[name] = (value, effect)
    return best


def pairs(digest: LabDigest, knobs: Sequence[Knob], tried: set[tuple[tuple[str, str], ...]],
          current: Mapping[str, Any]) -> list[Hypothesis]:
    """Pairs of neutral-to-good singles, the pair with the largest summed effect first."""
    best = best_neutral_singles(digest, knobs)
    ranked = []
    for (k1, (v1, e1)), (k2, (v2, e2)) in itertools.combinations(sorted(best.items()), 2):
        key = tuple(sorted((k, format_value(v)) for k, v in ((k1, v1), (k2, v2))))
        if key in tried:
            continue
        title = (f"pair: {k1} {format_value(current.get(k1))} -> {format_value(v1)} + "
                 f"{k2} {format_value(current.get(k2))} -> {format_value(v2)}")
        ranked.append((-(e1 + e2), Hypothesis(
            id=f"pair-{k1}-{format_value(v1)}+{k2}-{format_value(v2)}",
            title=title,
            rationale="pair of two knobs whose single moves were each neutral-to-good",
            source="knob",
            changes={k1: v1, k2: v2},
        )))
    ranked.sort(key=lambda item: item[0])
    return [h for _, h in ranked[:MAX_PAIRS]]

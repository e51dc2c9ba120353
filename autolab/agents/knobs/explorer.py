"""The knob explorer: the Researcher and Worker that need no LLM.

It reads the knobs of the editable files (:mod:`autolab.agents.knobs.discover`: module-level
assignments, argparse defaults, config-class fields, YAML / JSON / TOML values), proposes
single-knob changes, and writes each as an in-place edit of the value's text.

Moves: floats x2 and x1/2 (0.0 -> 0.1), ints +-1 when small and x2 / //2 otherwise, booleans
flipped, strings to the other values named in a ``# choices: a, b, c`` comment (or quoted in
the line's comment). It adapts to what the lab has seen:

- a knob whose move won (was promoted) is pushed again in the same direction;
- values already tried on the current code are skipped;
- a knob whose both moves lost is retried with narrower steps (x sqrt 2, then x 2^(1/4));
- after a promotion moved a knob from a to b, the next step (b * b/a) comes first, and pairs of
  knobs whose singles were neutral-to-good come after the singles
  (:mod:`autolab.agents.knobs.followups`).

Knobs that only buy compute (``STEPS``, ``max_iters``, ``EPOCHS``, ``TIME_BUDGET``...), seeds
and settings (paths, logging, device) are left alone by default, because a fixed step budget
would make more steps "win" unfairly; width, depth, batch and context knobs are tried last and
carry a ``compute`` marker. List knobs in ``[search] exclude`` to skip more, or
``[search] focus`` to try some first.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from autolab.agents.base import LabDigest
from autolab.agents.knobs.discover import find_knobs
from autolab.agents.knobs.followups import pairs, pushes
from autolab.agents.knobs.model import Knob, find, format_value, resolve, set_knob
from autolab_core.errors import PatchError
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis


def moves(knob: Knob, narrow: int = 0) -> list[tuple[Any, str]]:
    """Candidate values for one knob, each with a short description of the move."""
    v = knob.value
    out: list[tuple[Any, str]] = []
    if isinstance(v, bool):
        out.append((not v, "flip"))
    elif isinstance(v, float):
        if v == 0.0:
            out.append((0.1, "0 -> 0.1"))
        elif 0.5 <= v < 1.0:  # betas, momentum, EMA decay: move the distance to 1
            factor = 2.0 ** (1.0 / (2**narrow))
            gap = 1.0 - v
            out += [(_round(1.0 - gap / factor), f"1-x /{factor:.3g}"),
                    (_round(1.0 - gap * factor), f"1-x x{factor:.3g}")]
        else:
            factor = 2.0 ** (1.0 / (2**narrow))
            up, down = _round(v * factor), _round(v / factor)
            out += [(up, f"x{factor:.3g}"), (down, f"/{factor:.3g}")]
    elif isinstance(v, int):
        if narrow:
            return []
        if abs(v) <= 4:
            out += [(v + 1, "+1"), (v - 1, "-1")] if v > 1 else [(v + 1, "+1")]
        else:
            out += [(v * 2, "x2"), (v // 2, "/2")]
    elif isinstance(v, str):
        out += [(c, f"-> {c}") for c in knob.choices if c != v]
    return [(value, label) for value, label in out if value != v]


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _changes_key(changes: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, format_value(v)) for k, v in changes.items()))


@attrs.define
class KnobExplorer:
    """Proposes single-knob changes; implements both ``Proposer`` and ``PatchWriter``.

    ``command`` is the lab's ``[run] command`` argv: knobs it overrides are not changed.
    """

    editable: Sequence[str]
    exclude: Iterable[str] = ()
    focus: Sequence[str] = ()
    seed: int = 0
    command: Sequence[str] = ()
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def knobs_all(self, files: Mapping[str, str]) -> list[Knob]:
        """Every knob of the editable files (what ``autolab try`` accepts)."""
        return find_knobs(files, self.editable, self.command)

    def knobs(self, files: Mapping[str, str]) -> list[Knob]:
        """The knobs the explorer moves: not compute-only (steps, epochs, time), not seeds or
        settings such as paths and logging, not fixed by the command, not in ``exclude``."""
        every = self.knobs_all(files)
        excluded = {k.name for name in self.exclude if (k := _quiet_find(name, every))}
        return [k for k in every if k.explored and k.name not in excluded]

    def _focus_rank(self, knob: Knob, every: Sequence[Knob]) -> int | None:
        for i, name in enumerate(self.focus):
            hit = _quiet_find(name, every)
            if hit is not None and hit.name == knob.name:
                return i
        return None

    def propose(self, digest: LabDigest, n: int) -> list[Hypothesis]:
        knobs = self.knobs(digest.files)
        tried = _tried_on_current_code(digest)
        won = _won_moves(digest.experiments)
        lost_both = _lost_counts(digest, knobs)
        ranked: list[tuple[float, Hypothesis]] = []
        for order, knob in enumerate(knobs):
            narrow = lost_both.get(knob.name, 0)
            focus = self._focus_rank(knob, knobs)
            for value, label in moves(knob, narrow=min(narrow, 2)):
                changes = {knob.name: value}
                if _changes_key(changes) in tried:
                    continue
                score = float(order)
                direction = _direction(knob.value, value)
                if focus is not None:
                    score -= 1000 - focus
                if won.get(knob.name) == direction:
                    score -= 500  # keep going in a direction that improved
                if knob.compute or (isinstance(knob.value, int) and not isinstance(knob.value, bool)):
                    score += 100  # architecture and batch knobs change compute: try them last
                score += 10 * narrow + self._rng.random() * 0.1
                ranked.append((score, Hypothesis(
                    id=f"knob-{knob.name}-{format_value(value)}",
                    title=f"{knob.name} {label}: {format_value(knob.value)} -> {format_value(value)}",
                    rationale=f"single-knob move of {knob.name} in {knob.file}",
                    source="knob",
                    changes=changes,
                )))
        ranked.sort(key=lambda item: item[0])
        out = [h for h in pushes(digest, knobs) if _changes_key(h.changes) not in tried]
        pushed = {_changes_key(h.changes) for h in out}
        out += [h for _, h in ranked if _changes_key(h.changes) not in pushed]
        if len(out) < n:  # singles exhausted: pairs of neutral-to-good knobs
            out += pairs(digest, knobs, tried, {k.name: k.value for k in knobs})
        return out[:n]

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        if not hypothesis.changes:
            raise PatchError(f"hypothesis {hypothesis.title!r} names no knob to change")
        out: dict[str, str] = {}
        for name, value in hypothesis.changes.items():
            knob = resolve(name, self.knobs_all({**files, **out}))  # re-read: spans moved
            if knob.set_by:
                raise PatchError(f"{knob.name} is set by [run] command ({knob.set_by}), so an edit "
                                 f"of {knob.file} would not change it; remove it from the command")
            out[knob.file] = set_knob(out.get(knob.file, files[knob.file]), knob, value)
        return out


def _quiet_find(name: str, knobs: Sequence[Knob]) -> Knob | None:
    try:
        return find(name, knobs)
    except PatchError:
        return None


@attrs.define
class RandomSearch(KnobExplorer):
    """Random single-knob changes over the same knobs (the baseline the explorer must beat)."""

    def propose(self, digest: LabDigest, n: int) -> list[Hypothesis]:
        knobs = self.knobs(digest.files)
        tried = _tried_on_current_code(digest)
        out: list[Hypothesis] = []
        for _ in range(50 * max(n, 1)):
            if len(out) >= n or not knobs:
                break
            knob = self._rng.choice(knobs)
            value = _random_value(knob, self._rng)
            if value is None or value == knob.value:
                continue
            changes = {knob.name: value}
            if _changes_key(changes) in tried:
                continue
            tried.add(_changes_key(changes))
            out.append(Hypothesis(
                id=f"random-{knob.name}-{format_value(value)}",
                title=f"{knob.name}: {format_value(knob.value)} -> {format_value(value)} (random)",
                source="random", changes=changes,
            ))
        return out


def _random_value(knob: Knob, rng: random.Random) -> Any:
    v = knob.value
    if isinstance(v, bool):
        return not v
    if isinstance(v, float):
        return _round((v or 0.1) * math.exp(rng.uniform(math.log(0.25), math.log(4))))
    if isinstance(v, int):
        return max(1, round(v * math.exp(rng.uniform(math.log(0.5), math.log(2)))))
    if isinstance(v, str) and knob.choices:
        return rng.choice(knob.choices)
    return None


def _direction(old: Any, new: Any) -> str:
    if isinstance(old, int | float) and isinstance(new, int | float) and not isinstance(old, bool):
        return "up" if new > old else "down"
    return "other"


def _tried_on_current_code(digest: LabDigest) -> set[tuple[tuple[str, str], ...]]:
    """Knob changes already queued, running or tried on the code main has now."""
    current = digest.code_hash
    tried = set()
    for exp in digest.experiments:
        if not exp.hypothesis.changes or exp.role != "candidate":
            continue
        if exp.status is ExperimentStatus.REJECTED and exp.base_code != current:
            continue
        if exp.base_code == current or not exp.done:
            tried.add(_changes_key(exp.hypothesis.changes))
    return tried


def _won_moves(experiments: Sequence[Experiment]) -> dict[str, str]:
    """knob -> direction of its most recent promoted move."""
    won: dict[str, str] = {}
    for exp in experiments:
        if exp.verdict == "promoted" and len(exp.hypothesis.changes) == 1:
            (name, value), = exp.hypothesis.changes.items()
            match = re.search(r": (\S+) -> (\S+)", exp.hypothesis.title)
            if match:
                try:
                    before = float(match.group(1))
                    won[name] = "up" if float(value) > before else "down"
                except (TypeError, ValueError):
                    won[name] = "other"
    return won


def _lost_counts(digest: LabDigest, knobs: Sequence[Knob]) -> dict[str, int]:
    """For each knob, how many rounds of moves all lost on the current code (for narrowing)."""
    current = digest.code_hash
    result: dict[str, int] = {}
    for knob in knobs:
        level = 0
        while level < 3:
            wanted = {_changes_key({knob.name: v}) for v, _ in moves(knob, narrow=level)}
            if not wanted:
                break
            done = {
                _changes_key(e.hypothesis.changes) for e in digest.experiments
                if e.base_code == current and e.role == "candidate" and e.done
                and e.verdict in ("not better", "failed", "worse")
            }
            if wanted <= done:
                level += 1
            else:
                break
        if level:
            result[knob.name] = level
    return result

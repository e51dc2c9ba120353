"""Numbers the status table, the report and the charts share, from plain Experiment lists.

API::

    main_value(experiments, code) -> float | None              # the gate's main score
    leaderboard(experiments, direction, promotion=None) -> list[Entry]  # best effect first
    run_summary(experiments, direction, since=None, ids=None, top=10, max_rows=40)
        -> RunSummary                                           # the end of `autolab run`
    id_key(experiment_id) -> tuple                              # numeric order: 0042 < 10000
    promotions_from(experiments, direction) -> list[Promotion]  # flag "promoted[:<commit>]"
    gantt_segments(experiments, now) -> list[Segment]
    merge_segments(segments, resolution_s) -> list[Segment]     # for 10,000 experiments
    utilisation(segments) -> (list[SlotUse], overall fraction)
    pruned_savings(experiments) -> float                        # seconds saved by pruning

Effect and uncertainty come from the noise gate's own model (:mod:`autolab.gate`), so the
leaderboard and the promotion decisions never disagree: a candidate's runs are
``gate.runs_of`` (itself and its finished confirmation seeds), main's are ``gate.main_runs`` on
the candidate's base code, the noise is ``gate.pooled_sigma`` (floored at ``[promotion]
min_sigma``) and ``effect`` / ``uncertainty`` are ``gate.judge``'s ``effect`` / ``err``
(``sigma * sqrt(1/n + 1/m)``; positive is better). No uncertainty is shown before any code has
been run twice; no effect before main has a run on the candidate's base.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Sequence

import attrs

from autolab.reporting.gate_runs import GateRuns
from autolab.run import gate
from autolab_core.config import PromotionSection
from autolab_core.models import Direction, Experiment, ExperimentStatus, id_key
from autolab_core.vocab import Flag, Role, Verdict

_OUTCOME = {
    ExperimentStatus.FINISHED: "finished",
    ExperimentStatus.PRUNED: "pruned",
    ExperimentStatus.FAILED: "failed",
    ExperimentStatus.CANCELLED: "cancelled",
    ExperimentStatus.REJECTED: "failed",
}
OUTCOMES = ("running", "finished", "pruned", "failed", "cancelled")


@attrs.frozen
class Entry:
    """One leaderboard line: a candidate with all its seeds."""

    experiment_id: str
    title: str
    status: str
    value: float
    values: tuple[float, ...]
    effect: float | None
    uncertainty: float | None
    base: float | None
    flags: tuple[str, ...] = ()
    trusted: bool = True
    source: str = ""
    cost_usd: float = 0.0

    @property
    def n_seeds(self) -> int:
        return len(self.values)


@attrs.frozen
class Promotion:
    experiment_id: str
    at: float
    title: str
    value: float | None
    commit: str | None = None


@attrs.frozen
class Segment:
    """A bar of the Gantt chart: ``kind`` is "queued" (waiting on the backend) or "running"."""

    experiment_id: str
    slot: str
    kind: str
    start: float
    end: float
    outcome: str  # one of OUTCOMES
    count: int = 1  # experiments merged into this bar


@attrs.frozen
class SlotUse:
    slot: str
    busy_s: float
    span_s: float
    runs: int

    @property
    def fraction(self) -> float:
        return self.busy_s / self.span_s if self.span_s > 0 else 0.0


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _result_value(e: Experiment) -> float | None:
    return e.result.value if e.result is not None and _finite(e.result.value) else None


def main_value(experiments: Sequence[Experiment], code: str) -> float | None:
    """Main's score when its code hashes to ``code``: the mean of the runs the gate measures it
    with (``gate.main_runs``); None before any of them finished."""
    values = gate.values(gate.main_runs(experiments, code))
    return statistics.fmean(values) if values else None


def outcome(e: Experiment) -> str:
    return _OUTCOME.get(e.status, "running")


def leaderboard(experiments: Sequence[Experiment], direction: Direction,
                promotion: PromotionSection | None = None) -> list[Entry]:
    """Every candidate with a finished result, best effect first (then best value).

    ``promotion`` is the lab's ``[promotion]`` table (its ``min_sigma`` floors the noise, as in
    the gate); the defaults when None.
    """
    rules = promotion or PromotionSection()
    sigma = gate.pooled_sigma(experiments, rules.min_sigma)
    runs = GateRuns.of(experiments)
    mains: dict[str, list[float]] = {}
    entries = []
    for e in experiments:
        if e.role != Role.CANDIDATE:
            continue
        values = tuple(gate.values(runs.of_candidate(e)))
        if not values or not all(map(math.isfinite, values)):
            continue  # nothing to rank (a NaN result carries its own flag)
        code = e.base_code or ""
        if code not in mains:
            mains[code] = gate.values(runs.of_main(code))
        main = mains[code]
        mean = math.fsum(values) / len(values)
        effect = unc = None
        if main:
            v = gate.judge(values, main, sigma or 0.0, direction, rules, screen=False)
            effect, unc = v.effect, (v.err if sigma is not None else None)
        entries.append(Entry(
            e.id, e.hypothesis.title, e.verdict or e.status.value, mean, values, effect, unc,
            statistics.fmean(main) if main else None, tuple(e.flags),
            e.result.trusted if e.result else True, e.hypothesis.source, e.cost_usd,
        ))
    sign = 1 if direction is Direction.MINIMIZE else -1
    entries.sort(key=lambda r: (r.effect is None, -(r.effect or 0.0), sign * r.value,
                                id_key(r.experiment_id)))
    return entries


@attrs.frozen
class RunSummary:
    """What the end of ``autolab run`` shows: this session's experiments (the newest
    ``max_rows`` of them, in id order), how many more there were, and the leaderboard's top."""

    session: list[Experiment]
    hidden: int
    counts: dict[str, int]  # this session: "promoted", "failed", "rejected", "experiments"
    promoted: list[Experiment]
    top: list[Entry]
    total: int  # experiments in the lab


def run_summary(
    experiments: Sequence[Experiment],
    direction: Direction,
    *,
    since: float | None = None,
    ids: Collection[str] | None = None,
    top: int = 10,
    max_rows: int = 40,
    promotion: PromotionSection | None = None,
) -> RunSummary:
    """The bounded end-of-run summary.

    This session's experiments are those with an event at or after ``since`` or whose id is in
    ``ids`` (every experiment when both are None); confirmation seeds are counted with their
    candidate, not listed. At most ``max_rows`` session rows and ``top`` leaderboard rows.
    """
    def in_session(e: Experiment) -> bool:
        if since is None and ids is None:
            return True
        return (ids is not None and e.id in ids) or (
            since is not None and any(ev.at >= since for ev in e.history))

    mine = sorted((e for e in experiments if in_session(e)), key=lambda e: id_key(e.id))
    listed = [e for e in mine if e.role != Role.CONFIRM]
    shown = listed[-max_rows:] if max_rows > 0 else []
    promoted = [e for e in mine if e.verdict == Verdict.PROMOTED]
    counts = {
        "experiments": len(mine), "promoted": len(promoted),
        "failed": sum(1 for e in mine if e.status is ExperimentStatus.FAILED),
        "rejected": sum(1 for e in mine if e.status is ExperimentStatus.REJECTED),
    }
    return RunSummary(shown, len(listed) - len(shown), counts, promoted[-max_rows:],
                      leaderboard(experiments, direction, promotion)[:top], len(experiments))


def promotions_from(experiments: Iterable[Experiment], direction: Direction) -> list[Promotion]:
    """Candidates with the verdict ``promoted`` (or a ``promoted[:<commit>]`` flag), oldest
    first."""
    out = []
    for e in experiments:
        flag = next((f for f in map(Flag.parse, e.flags) if f.kind == Verdict.PROMOTED), None)
        if flag is None and e.verdict == Verdict.PROMOTED:
            flag = Flag(Verdict.PROMOTED)
        if flag is None:
            continue
        at = e.at(ExperimentStatus.FINISHED) or (e.history[-1].at if e.history else 0.0)
        commit = flag.reason or e.commit
        out.append(Promotion(e.id, at, e.hypothesis.title, _result_value(e), commit))
    return sorted(out, key=lambda p: p.at)


def _end(e: Experiment, now: float) -> float:
    return e.history[-1].at if e.done and e.history else now


def gantt_segments(experiments: Iterable[Experiment], now: float) -> list[Segment]:
    """Queued-on-backend and running bars per worker slot, from the status history."""
    segs = []
    for e in experiments:
        started = e.at(ExperimentStatus.STARTED)
        submitted = e.at(ExperimentStatus.SUBMITTED)
        if started is None and submitted is None:
            continue
        slot = e.slot or "unassigned"
        out, end = outcome(e), _end(e, now)
        if submitted is not None:
            qend = started if started is not None else end
            if qend > submitted:
                segs.append(Segment(e.id, slot, "queued", submitted, qend, out))
        if started is not None:
            segs.append(Segment(e.id, slot, "running", started, max(end, started), out))
    return segs


def merge_segments(segments: Sequence[Segment], resolution_s: float) -> list[Segment]:
    """Merge consecutive bars of one slot and kind with the same outcome and less than
    ``resolution_s`` (about a pixel) between them; a different outcome is never hidden."""
    groups: dict[tuple[str, str], list[Segment]] = {}
    for s in segments:
        groups.setdefault((s.slot, s.kind), []).append(s)
    merged: list[Segment] = []

    def close(first: Segment, end: float, count: int) -> None:
        merged.append(first if count == 1 else attrs.evolve(
            first, end=end, count=count, experiment_id=f"{count} experiments"))

    for group in groups.values():
        group.sort(key=lambda s: s.start)
        first, end, count = group[0], group[0].end, group[0].count
        for s in group[1:]:
            if s.outcome == first.outcome and s.start - end <= resolution_s:
                end, count = max(end, s.end), count + s.count
            else:
                close(first, end, count)
                first, end, count = s, s.end, s.count
        close(first, end, count)
    return sorted(merged, key=lambda s: (s.slot, s.start))


def utilisation(segments: Sequence[Segment]) -> tuple[list[SlotUse], float]:
    """Busy (running) time per slot over the span from the first start to the last end."""
    running = [s for s in segments if s.kind == "running"]
    if not running:
        return [], 0.0
    t0 = min(s.start for s in running)
    t1 = max(s.end for s in running)
    span = max(t1 - t0, 1e-9)
    per: dict[str, list[Segment]] = {}
    for s in running:
        per.setdefault(s.slot, []).append(s)
    uses = []
    for slot, segs in sorted(per.items()):
        segs.sort(key=lambda s: s.start)
        busy, cur_s, cur_e = 0.0, segs[0].start, segs[0].end
        for s in segs[1:]:
            if s.start > cur_e:
                busy += cur_e - cur_s
                cur_s, cur_e = s.start, s.end
            else:
                cur_e = max(cur_e, s.end)
        busy += cur_e - cur_s
        uses.append(SlotUse(slot, busy, span, sum(x.count for x in segs)))
    overall = sum(u.busy_s for u in uses) / (span * len(uses))
    return uses, overall


def run_seconds(e: Experiment, now: float) -> float | None:
    started = e.at(ExperimentStatus.STARTED)
    return None if started is None else max(0.0, _end(e, now) - started)


def pruned_savings(experiments: Sequence[Experiment]) -> float:
    """Seconds saved by pruning: the median finished candidate's run time minus each pruned
    run's, summed (0 when nothing finished yet)."""
    full = [d for e in experiments if e.status is ExperimentStatus.FINISHED
            and e.role == Role.CANDIDATE and (d := run_seconds(e, 0.0)) is not None]
    if not full:
        return 0.0
    typical = statistics.median(full)
    return sum(max(0.0, typical - (run_seconds(e, 0.0) or 0.0))
               for e in experiments if e.status is ExperimentStatus.PRUNED)

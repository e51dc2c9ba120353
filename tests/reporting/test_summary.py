"""Leaderboard effects, promotions, Gantt segments and utilisation on hand-checked numbers."""

from __future__ import annotations

import math
import statistics

import pytest

from autolab.reporting.summary import (
    base_stats,
    gantt_segments,
    leaderboard,
    merge_segments,
    promotions_from,
    pruned_savings,
    utilisation,
)
from autolab_core.models import (
    Direction,
    Experiment,
    ExperimentStatus,
    Hypothesis,
    Result,
)

S = ExperimentStatus


def exp(exp_id: str, value: float | None = None, role: str = "candidate", commit: str = "c1",
        parent: str | None = None, slot: str = "w0", events: tuple = (), flags: tuple = ()
        ) -> Experiment:
    e = Experiment(id=exp_id, hypothesis=Hypothesis(id="h" + exp_id, title="idea " + exp_id),
                   base_commit=commit, branch="b", role=role, parent=parent, slot=slot,
                   result=None if value is None else Result("val_bpb", value), flags=flags)
    for status, at in events:
        e = e.with_status(status, at=at)
    return e


def test_effect_and_uncertainty_against_the_same_commits_baselines() -> None:
    lab = [
        exp("b1", 1.00, "baseline"), exp("b2", 1.02, "baseline"), exp("b3", 0.98, "baseline"),
        exp("old", 5.0, "baseline", commit="c0"),  # another main: not this base
        exp("a", 0.95), exp("a2", 0.97, "confirm", parent="a"),
        exp("b", 1.01),
        exp("orphan", 0.5, commit="c9"),  # no baseline ran on c9: no effect claimed
        exp("crashed"),
    ]
    rows = leaderboard(lab, Direction.MINIMIZE)
    assert [r.experiment_id for r in rows] == ["a", "b", "orphan"]
    a = rows[0]
    assert a.values == (0.95, 0.97) and a.value == pytest.approx(0.96)
    assert a.effect == pytest.approx(1.00 - 0.96)
    sb, sc = statistics.stdev([1.0, 1.02, 0.98]), statistics.stdev([0.95, 0.97])
    assert a.uncertainty == pytest.approx(math.sqrt(sb**2 / 3 + sc**2 / 2))
    b = rows[1]  # one seed: assumed as noisy as main
    assert b.effect == pytest.approx(-0.01) and b.uncertainty == pytest.approx(
        math.sqrt(sb**2 / 3 + sb**2 / 1))
    assert rows[2].effect is None and rows[2].uncertainty is None
    assert base_stats(lab, "c1").mean == pytest.approx(1.0)
    assert base_stats(lab, "c9") is None
    up = leaderboard(lab, Direction.MAXIMIZE)
    assert up[0].experiment_id == "b" and up[0].effect == pytest.approx(0.01)


def test_promotions_come_from_flags_in_time_order() -> None:
    lab = [
        exp("late", 0.9, flags=("promoted:abc123",), events=((S.FINISHED, 200.0),)),
        exp("early", 0.95, flags=("promoted",), events=((S.FINISHED, 100.0),)),
        exp("plain", 0.99, flags=("divergence",), events=((S.FINISHED, 150.0),)),
    ]
    proms = promotions_from(lab, Direction.MINIMIZE)
    assert [(p.experiment_id, p.at, p.commit) for p in proms] == [
        ("early", 100.0, None), ("late", 200.0, "abc123")]


def test_gantt_segments_and_utilisation() -> None:
    lab = [
        exp("a", slot="w0", events=((S.QUEUED, 0.0), (S.SUBMITTED, 5.0), (S.STARTED, 10.0),
                                    (S.FINISHED, 60.0))),
        exp("b", slot="w0", events=((S.SUBMITTED, 55.0), (S.STARTED, 70.0), (S.PRUNED, 90.0))),
        exp("c", slot="w1", events=((S.SUBMITTED, 10.0), (S.STARTED, 10.0), (S.FAILED, 30.0))),
        exp("d", slot="w1", events=((S.SUBMITTED, 40.0), (S.STARTED, 50.0))),  # still running
        exp("e", events=((S.QUEUED, 0.0),)),  # never submitted: no bar
    ]
    segs = gantt_segments(lab, now=110.0)
    got = {(s.experiment_id, s.kind): (s.slot, s.start, s.end, s.outcome) for s in segs}
    assert got == {
        ("a", "queued"): ("w0", 5.0, 10.0, "finished"),
        ("a", "running"): ("w0", 10.0, 60.0, "finished"),
        ("b", "queued"): ("w0", 55.0, 70.0, "pruned"),
        ("b", "running"): ("w0", 70.0, 90.0, "pruned"),
        ("c", "running"): ("w1", 10.0, 30.0, "failed"),
        ("d", "queued"): ("w1", 40.0, 50.0, "running"),
        ("d", "running"): ("w1", 50.0, 110.0, "running"),
    }
    uses, overall = utilisation(segs)
    span = 110.0 - 10.0
    assert [(u.slot, u.busy_s, u.runs) for u in uses] == [("w0", 70.0, 2), ("w1", 80.0, 2)]
    assert uses[0].fraction == pytest.approx(70 / span)
    assert overall == pytest.approx((70 + 80) / (2 * span))


def test_merging_bars_keeps_counts_and_coverage() -> None:
    lab = [exp(f"x{i}", slot="w0", events=((S.STARTED, i * 10.0), (S.FINISHED, i * 10.0 + 9.5)))
           for i in range(100)]
    segs = gantt_segments(lab, now=2000.0)
    merged = merge_segments(segs, resolution_s=1.0)
    assert len(merged) == 1 and merged[0].count == 100
    assert (merged[0].start, merged[0].end) == (0.0, 999.5)
    assert len(merge_segments(segs, resolution_s=0.1)) == 100


def test_pruned_savings_uses_the_typical_full_run() -> None:
    lab = [exp(f"f{i}", 1.0, events=((S.STARTED, 0.0), (S.FINISHED, 100.0 + i))) for i in range(3)]
    lab.append(exp("p", events=((S.STARTED, 0.0), (S.PRUNED, 30.0))))
    assert pruned_savings(lab) == pytest.approx(101.0 - 30.0)
    assert pruned_savings(lab[-1:]) == 0.0

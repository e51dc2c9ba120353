"""Leaderboard effects (the noise gate's statistics), the bounded end-of-run summary, numeric
id order, promotions, Gantt segments and utilisation on hand-checked numbers."""

from __future__ import annotations

import math

import attrs
import pytest

from autolab.reporting.gate_runs import GateRuns
from autolab.reporting.summary import (
    gantt_segments,
    id_key,
    leaderboard,
    main_value,
    merge_segments,
    promotions_from,
    pruned_savings,
    run_summary,
    utilisation,
)
from autolab.reporting.synthetic import synthetic_lab
from autolab.run import gate
from autolab_core.config import PromotionSection
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


def run(exp_id: str, value: float, role: str = "candidate", commit: str = "c1",
        parent: str | None = None, verdict: str | None = None, code_hash: str | None = None
        ) -> Experiment:
    """A finished run on main's code ``code-<commit>``, as the loop records it."""
    e = exp(exp_id, value, role, commit, parent, events=((S.FINISHED, 1.0),))
    return attrs.evolve(e, base_code=f"code-{commit}", verdict=verdict, code_hash=code_hash)


LAB = [
    run("b1", 1.00, "baseline"), run("b2", 1.02, "baseline"), run("b3", 0.98, "baseline"),
    run("old1", 5.0, "baseline", commit="c0"), run("old2", 5.1, "baseline", commit="c0"),
    run("a", 0.95, verdict="promoted", code_hash="code-c2"), run("a2", 0.97, "confirm", parent="a"),
    run("b", 1.01),
    run("next", 0.90, commit="c2"),  # on the promoted code: main is measured by a's runs
    run("orphan", 0.5, commit="c9"),  # nothing ran main's code c9: no effect claimed
    exp("crashed"),
    exp("running", 0.1),  # a result line but not finished: not ranked (as in the gate)
]


def test_leaderboard_effect_and_err_are_the_gates() -> None:
    rules = PromotionSection(min_sigma=0.001)
    rows = leaderboard(LAB, Direction.MINIMIZE, rules)
    assert [r.experiment_id for r in rows] == ["next", "a", "b", "orphan"]
    sigma = gate.pooled_sigma(LAB, rules.min_sigma)
    assert sigma is not None
    for row in rows[:3]:
        cand = next(e for e in LAB if e.id == row.experiment_id)
        v = gate.judge(gate.values(gate.runs_of(LAB, cand.id)),
                       gate.values(gate.main_runs(LAB, cand.base_code or "")),
                       sigma, Direction.MINIMIZE, rules, screen=False)
        assert (row.effect, row.uncertainty) == (v.effect, v.err)  # one model, not two
    a = rows[1]
    assert a.values == (0.95, 0.97) and a.value == pytest.approx(0.96)
    pooled = math.sqrt((0.0008 + 0.005 + 0.0002) / 4)  # main c1, main c0, a and its seed
    assert a.effect == pytest.approx(1.00 - 0.96)
    assert a.uncertainty == pytest.approx(pooled * math.sqrt(1 / 2 + 1 / 3))
    assert rows[0].effect == pytest.approx(0.96 - 0.90) and rows[0].base == pytest.approx(0.96)
    assert rows[3].effect is None and rows[3].uncertainty is None
    floored = leaderboard(LAB, Direction.MINIMIZE, PromotionSection(min_sigma=1.0))
    assert floored[1].uncertainty == pytest.approx(math.sqrt(1 / 2 + 1 / 3))
    assert main_value(LAB, "code-c1") == pytest.approx(1.0)
    assert main_value(LAB, "code-c2") == pytest.approx(0.96)  # the promoted runs measure it
    assert main_value(LAB, "code-c9") is None
    up = leaderboard(LAB, Direction.MAXIMIZE)
    assert up[0].experiment_id == "b" and up[0].effect == pytest.approx(0.01)


def test_no_uncertainty_before_any_code_ran_twice() -> None:
    rows = leaderboard([run("b1", 1.0, "baseline"), run("x", 0.9)], Direction.MINIMIZE)
    assert rows[0].effect == pytest.approx(0.1) and rows[0].uncertainty is None


def test_ids_sort_numerically_at_any_count() -> None:
    ids = ["10000", "0042", "9999", "0001", "100000", "e00010", "e9"]
    assert sorted(ids, key=id_key) == ["0001", "0042", "9999", "10000", "100000", "e9", "e00010"]


def test_end_of_run_summary_is_bounded_at_ten_thousand_experiments() -> None:
    lab = synthetic_lab(10_000, slots=8, seed=3, id_format="{:04d}")
    assert lab[-1].id == "10000"
    since = lab[-300].history[0].at  # this session: the last few hundred experiments
    s = run_summary(lab, Direction.MINIMIZE, since=since, top=10, max_rows=40)
    assert len(s.session) == 40 and len(s.top) == 10 and s.total == 10_000
    assert 250 <= s.hidden + len(s.session) <= 10_000 - 9_000
    ids = [e.id for e in s.session]
    assert ids == sorted(ids, key=id_key) and ids[-1] == "10000"
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    whole = run_summary(lab, Direction.MINIMIZE)  # no session given: still bounded
    assert len(whole.session) == 40 and whole.hidden > 9_000
    by_ids = run_summary(lab, Direction.MINIMIZE, ids={"0042", "10000", "9999"})
    assert [e.id for e in by_ids.session] == ["0042", "9999", "10000"]
    assert by_ids.counts["experiments"] == 3


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


def test_indexed_gate_runs_are_exactly_the_gates() -> None:
    lab = [*synthetic_lab(600, seed=2), *LAB]
    runs = GateRuns.of(lab)
    codes = {e.base_code or "" for e in lab} | {""}
    assert len(codes) > 5
    for code in codes:
        assert runs.of_main(code) == gate.main_runs(lab, code)
    for cand in lab:
        if cand.role == "candidate":
            assert runs.of_candidate(cand) == gate.runs_of(lab, cand.id)

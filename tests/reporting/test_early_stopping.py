"""Median stopping and successive halving on synthetic loss curves."""

from __future__ import annotations

import math

import pytest

from autolab.reporting.curves import Curve
from autolab.reporting.early_stopping import decide
from autolab.reporting.options import ReporterOptions
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis


def loss(offset: float, upto: int = 1000, pace: float = 0.5) -> Curve:
    steps = tuple(range(0, upto + 1, 10))
    return Curve(steps, tuple(2 + 8 * math.exp(-s / 150) + offset for s in steps),
                 tuple(100.0 + s * pace for s in steps))


def running(exp_id: str = "cand", role: str = "candidate") -> Experiment:
    e = Experiment(id=exp_id, hypothesis=Hypothesis(id="h", title="t"), base_commit="c",
                   branch="b", role=role)
    return e.with_status(ExperimentStatus.STARTED, at=100.0)


PEERS = {f"p{i}": loss(offset) for i, offset in enumerate((-0.1, 0.0, 0.05, 0.1))}
MEDIAN = ReporterOptions(early_stopping="median", min_steps=100)


def test_off_by_default_and_never_for_baselines_or_confirmations() -> None:
    bad = loss(1.0, upto=300)
    assert decide(running(), bad, PEERS, ReporterOptions()) is None
    for role in ("baseline", "confirm"):
        assert decide(running(role=role), bad, PEERS, MEDIAN) is None
    assert decide(running(), bad, PEERS, MEDIAN) is not None  # the same curve as a candidate


def test_median_rule_prunes_a_laggard_and_reports_compute_saved() -> None:
    d = decide(running(), loss(0.5, upto=300), PEERS, MEDIAN)
    assert d is not None and d.rule == "median" and d.step == 300
    assert "worse than the median" in d.reason and "of 4 peers" in d.reason
    assert d.saved_steps == 700  # the peers ran to step 1000
    assert d.saved_seconds == pytest.approx(350.0)  # at this run's 0.5 s/step
    assert decide(running(), loss(0.5, upto=300), PEERS, MEDIAN, total_steps=2000).saved_steps \
        == 1700


def test_median_rule_spares_good_runs_early_runs_and_thin_evidence() -> None:
    assert decide(running(), loss(-0.2, upto=300), PEERS, MEDIAN) is None  # better than median
    assert decide(running(), loss(0.5, upto=90), PEERS, MEDIAN) is None  # before min_steps
    two_peers = dict(list(PEERS.items())[:2])
    assert decide(running(), loss(0.5, upto=300), two_peers, MEDIAN) is None  # < min_peers
    short_peers = {k: loss(0.0, upto=200) for k in PEERS}  # nobody reached step 300 yet
    assert decide(running(), loss(0.5, upto=300), short_peers, MEDIAN) is None
    finished = running().with_status(ExperimentStatus.FINISHED)
    assert decide(finished, loss(0.5, upto=300), PEERS, MEDIAN) is None
    itself = {**PEERS, "cand": loss(5.0)}  # its own curve among the peers is ignored
    assert decide(running(), loss(0.5, upto=300), itself, MEDIAN).reason.endswith(
        "of 4 peers at that step")


def test_median_rule_for_a_maximized_metric() -> None:
    opts = ReporterOptions(early_stopping="median", min_steps=100, metric="acc",
                           metric_direction="maximize")
    acc = {k: Curve(c.steps, tuple(-v for v in c.values), c.times) for k, c in PEERS.items()}
    worse = Curve(loss(0.5, 300).steps, tuple(-v for v in loss(0.5, 300).values))
    better = Curve(loss(-0.5, 300).steps, tuple(-v for v in loss(-0.5, 300).values))
    assert decide(running(), worse, acc, opts) is not None
    assert decide(running(), better, acc, opts) is None


def test_successive_halving_keeps_the_top_third_at_each_rung() -> None:
    opts = ReporterOptions(early_stopping="halving", min_steps=100, halving_eta=3)
    peers = {f"p{i}": loss(0.1 * i) for i in range(8)}  # offsets 0.0 .. 0.7
    worst = decide(running(), loss(0.65, upto=150), peers, opts)
    assert worst is not None and worst.rule == "halving"
    assert "rung 100" in worst.reason and "ranks 8 of 9" in worst.reason and "top 3" in worst.reason
    assert decide(running(), loss(0.15, upto=150), peers, opts) is None  # rank 3 of 9: kept
    # at rung 300 it is judged again, against the runs that got there
    assert "rung 300" in decide(running(), loss(0.65, upto=310), peers, opts).reason
    assert decide(running(), loss(0.65, upto=99), peers, opts) is None  # no rung yet
    two = dict(list(peers.items())[:1])
    assert decide(running(), loss(0.65, upto=150), two, opts) is None  # fewer than eta runs
    custom = ReporterOptions(early_stopping="halving", halving_rungs=[50, 500], min_steps=10)
    assert "rung 50" in decide(running(), loss(0.65, upto=120), peers, custom).reason


def test_a_run_that_trained_to_the_end_is_never_pruned() -> None:
    """Its evaluation is running: stopping it saves nothing and loses its score."""
    assert decide(running(), loss(0.5, upto=1000), PEERS, MEDIAN) is None
    assert decide(running(), loss(0.5, upto=300), PEERS, MEDIAN, total_steps=300) is None
    halving = ReporterOptions(early_stopping="halving", min_steps=100, halving_eta=3)
    peers = {f"p{i}": loss(0.1 * i) for i in range(8)}
    assert decide(running(), loss(0.65, upto=1000), peers, halving) is None

"""``review``: one run-loop tick over a lab whose curves live in a real parquet store."""

from __future__ import annotations

import math
from pathlib import Path

from autolab.metrics.parquet_store import ParquetMetricStore
from autolab.reporting.options import ReporterOptions
from autolab.reporting.review import review
from autolab_core.models import (
    Experiment,
    ExperimentStatus,
    Hypothesis,
    JobState,
    JobStatus,
    MetricPoint,
    Result,
)
from autolab_core.testing import make_context

S = ExperimentStatus


def exp(exp_id: str, status: ExperimentStatus, role: str = "candidate",
        value: float | None = None, flags: tuple[str, ...] = ()) -> Experiment:
    e = Experiment(id=exp_id, hypothesis=Hypothesis(id="h", title=exp_id), base_commit="c1",
                   base_code="code1", branch="b", role=role, flags=flags,
                   result=None if value is None else Result("val_bpb", value))
    e = e.with_status(S.STARTED, at=0.0)
    return e if status is S.STARTED else e.with_status(status, at=1000.0)


def curve(exp_id: str, upto: int, offset: float = 0.0, blowup_at: int | None = None,
          tok: float = 50_000.0) -> list[MetricPoint]:
    pts = []
    for s in range(0, upto + 1, 10):
        v = 2 + 8 * math.exp(-s / 150) + offset
        if blowup_at is not None and s >= blowup_at:
            v *= 4
        pts += [MetricPoint(exp_id, s, "train_loss", v, float(s)),
                MetricPoint(exp_id, s, "tok_per_s", tok, float(s))]
    return pts


def test_one_tick_flags_new_anomalies_and_prunes_laggards(tmp_path: Path) -> None:
    store = ParquetMetricStore({}, make_context(tmp_path))
    lab = [exp(f"base{i}", S.FINISHED, "baseline", 1.0 + i / 1000) for i in range(3)]
    lab += [exp(f"done{i}", S.FINISHED, value=1.0) for i in range(3)]
    lab += [
        exp("laggard", S.STARTED),  # healthy but behind its peers: pruned
        exp("blowup", S.STARTED),  # diverges
        exp("known", S.STARTED, flags=("divergence",)),  # already flagged: not reported again
        exp("fast", S.STARTED),  # doing well: left alone
        exp("oom", S.FAILED),  # just ended
        exp("cheat", S.FINISHED, value=0.4),  # just ended, implausible (trusted result)
    ]
    for i in range(3):
        store.append(curve(f"base{i}", 1000, offset=i / 100))
        store.append(curve(f"done{i}", 1000, offset=0.02 * i))
    store.append(curve("laggard", 400, offset=0.6))
    store.append(curve("blowup", 400, blowup_at=200))
    store.append(curve("known", 400, blowup_at=200))
    store.append(curve("fast", 400, offset=-0.3, tok=20_000.0))
    store.append(curve("oom", 120))
    store.append(curve("cheat", 1000))
    options = ReporterOptions(early_stopping="median", min_steps=100)
    result = review(lab, store, options, now=450.0,
                    job_states={"oom": JobState(JobStatus.OOM, "OOMKilled", 137),
                                "cheat": JobState(JobStatus.SUCCEEDED, exit_code=0)})
    flags = {(a.experiment_id, a.flag) for a in result.anomalies}
    assert flags == {("blowup", "divergence"), ("fast", "throughput_drop"),
                     ("oom", "crash_oom"), ("cheat", "implausible_metric")}
    pruned = {d.experiment_id: d for d in result.prunes}
    assert set(pruned) == {"laggard", "blowup", "known"}
    assert pruned["laggard"].step == 400 and pruned["laggard"].saved_steps == 600
    off = review(lab, store, ReporterOptions(min_steps=100), now=450.0)
    assert off.prunes == []  # early stopping is off by default
    assert review([e for e in lab if e.status is not S.STARTED], store, options,
                  now=450.0).anomalies == []  # nothing running, nothing just ended

"""autolab_core.models: JSON round trips of every record, status timelines, Direction.

The round-trip tests also pin down ``to_dict``'s promise: its output is made of plain JSON
types only (enums as values, tuples as lists), i.e. exactly what ``json.loads`` gives back.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from autolab_core.models import (
    Direction,
    Experiment,
    ExperimentStatus,
    Hypothesis,
    JobHandle,
    JobSpec,
    JobState,
    JobStatus,
    MetricPoint,
    Paper,
    Result,
    StatusEvent,
    to_dict,
)

HYPOTHESIS = Hypothesis(
    id="h7", title="Longer warmup", rationale="Adam is unstable early", expected_effect="-0.01",
    risk="slower start", citation="arXiv:2401.00001", source="llm",
    changes={"warmup_steps": 200}, edits=({"search": "warmup = 50", "replace": "warmup = 200"},),
    conversation_id="c1", created_at=1700000000.5,
)
HANDLE = JobHandle(backend="slurm", job_id="12345", experiment_id="e1", submitted_at=1.5,
                   data={"folder": "/scratch/x", "slot": "node3"})
RESULT = Result(metric="val_bpb", value=1.234, seed=3, train_seconds=61.0, eval_hash="ab12",
                trusted=False, extra={"val_loss": 0.85})


def _experiment() -> Experiment:
    exp = Experiment(
        id="e1", hypothesis=HYPOTHESIS, base_commit="a" * 40, branch="autolab/exp-e1",
        commit="b" * 40, patch="--- a/train.py\n+++ b/train.py\n", tree_hash="t", code_hash="c",
        role="confirm", parent="e0", seed=3, handle=HANDLE, slot="node3",
        hardware={"gpu": "H100"}, eval_hash="ab12", result=RESULT, reason=None,
        flags=("nan_loss", "slow"), attempts=2, cost_usd=0.42,
    )
    return (
        exp.with_status(ExperimentStatus.QUEUED, at=10.0)
        .with_status(ExperimentStatus.SUBMITTED, "job 12345", at=11.0)
        .with_status(ExperimentStatus.STARTED, at=12.0)
        .with_status(ExperimentStatus.FINISHED, at=20.0)
    )


RECORDS: list[Any] = [
    HYPOTHESIS,
    Hypothesis(id="h0", title="baseline", source="baseline"),
    Paper(id="2401.00001", title="Warmup", summary="s", url="https://arxiv.org/abs/2401.00001",
          authors=("A. One", "B. Two"), published="2024-01-01", source="arxiv",
          keywords=("optim",)),
    MetricPoint(experiment_id="e1", step=10, name="train_loss", value=2.5, wall_time=3.0),
    JobSpec(experiment_id="e1", command=("python", "-m", "autolab_core.runner"), workdir="/w",
            env={"AUTOLAB_SEED": "3"}, time_limit_s=600.0, commit="c" * 40,
            branch="autolab/exp-e1", labels={"autolab-experiment": "e1"},
            resources={"gpus": 1, "memory_gb": 16}),
    HANDLE,
    JobState(status=JobStatus.OOM, reason="out of memory", exit_code=137, started_at=1.0,
             finished_at=2.0, hardware={"gpu": "A100"}, cost_usd=0.1),
    RESULT,
    StatusEvent(ExperimentStatus.PRUNED, at=5.0, note="diverged"),
    _experiment(),
    Experiment(id="e2", hypothesis=Hypothesis(id="h2", title="t"), base_commit="a",
               branch="autolab/exp-e2"),  # no history, handle or result
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_json_round_trip(record: Any) -> None:
    data = to_dict(record)
    text = json.dumps(data)
    assert data == json.loads(text), "to_dict must return plain JSON types"
    again = type(record).from_dict(json.loads(text))
    assert again == record
    assert to_dict(again) == data


def test_experiment_dict_shape() -> None:
    data = to_dict(_experiment())
    assert data["history"][1] == {"status": "submitted", "at": 11.0, "note": "job 12345"}
    assert data["handle"]["data"] == {"folder": "/scratch/x", "slot": "node3"}
    assert data["result"]["extra"] == {"val_loss": 0.85} and data["result"]["trusted"] is False
    assert data["flags"] == ["nan_loss", "slow"]
    assert data["hypothesis"]["edits"] == [{"search": "warmup = 50", "replace": "warmup = 200"}]


def test_old_records_without_optional_fields_still_load() -> None:
    exp = Experiment.from_dict({
        "id": "e9", "hypothesis": {"id": "h9", "title": "t"}, "base_commit": "a",
        "branch": "autolab/exp-e9", "handle": None, "result": None,
    })
    assert exp.status is ExperimentStatus.QUEUED and exp.history == () and exp.flags == ()
    assert JobState.from_dict({"status": "running"}).status is JobStatus.RUNNING


def test_with_status_builds_a_timeline_without_mutating() -> None:
    exp = Experiment(id="e", hypothesis=Hypothesis(id="h", title="t"), base_commit="a",
                     branch="b")
    assert exp.status is ExperimentStatus.QUEUED and not exp.done and exp.at(
        ExperimentStatus.QUEUED) is None
    started = exp.with_status(ExperimentStatus.SUBMITTED, at=1.0).with_status(
        ExperimentStatus.STARTED, at=2.0)
    assert exp.history == ()  # the original is unchanged
    assert started.status is ExperimentStatus.STARTED and not started.done
    retried = started.with_status(ExperimentStatus.SUBMITTED, "retry", at=3.0)
    assert retried.at(ExperimentStatus.SUBMITTED) == 1.0  # first time it got there
    assert [e.status for e in retried.history] == [
        ExperimentStatus.SUBMITTED, ExperimentStatus.STARTED, ExperimentStatus.SUBMITTED]
    assert retried.history[-1].note == "retry"
    before = retried.history[-1].at
    now = retried.with_status(ExperimentStatus.FINISHED)
    assert now.done and now.history[-1].at >= before  # default: the current time
    for final in (ExperimentStatus.FAILED, ExperimentStatus.CANCELLED, ExperimentStatus.PRUNED,
                  ExperimentStatus.REJECTED):
        assert exp.with_status(final).done
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        exp.id = "x"  # type: ignore[misc]


def test_job_status_terminal() -> None:
    terminal = {s for s in JobStatus if s.terminal}
    assert terminal == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                        JobStatus.TIMEOUT, JobStatus.OOM, JobStatus.PREEMPTED, JobStatus.LOST}


@pytest.mark.parametrize(
    ("direction", "a", "b", "better", "improvement"),
    [(Direction.MINIMIZE, 1.0, 1.5, True, 0.5), (Direction.MINIMIZE, 1.5, 1.0, False, -0.5),
     (Direction.MAXIMIZE, 0.9, 0.8, True, 0.1), (Direction.MAXIMIZE, 0.8, 0.9, False, -0.1),
     (Direction.MINIMIZE, 1.0, 1.0, False, 0.0), (Direction.MAXIMIZE, 1.0, 1.0, False, 0.0)],
)
def test_direction(direction: Direction, a: float, b: float, better: bool,
                   improvement: float) -> None:
    assert direction.better(a, b) is better
    assert direction.improvement(a, b) == pytest.approx(improvement)
    assert Direction(direction.value) is direction

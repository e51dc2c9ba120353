"""``autolab status``: the rich renderable, printed by a real rich Console."""

from __future__ import annotations

from rich.console import Console

from autolab.reporting.anomalies import Anomaly
from autolab.reporting.status import BudgetUsage, status_from_experiments, with_wait_reason
from autolab_core.models import (
    Direction,
    Experiment,
    ExperimentStatus,
    Hypothesis,
    JobState,
    JobStatus,
    MetricPoint,
    Result,
)

S = ExperimentStatus


def exp(exp_id: str, title: str, *events: tuple[ExperimentStatus, float], role: str = "candidate",
        value: float | None = None, slot: str | None = None, reason: str | None = None
        ) -> Experiment:
    e = Experiment(id=exp_id, hypothesis=Hypothesis(id="h", title=title), base_commit="c1",
                   base_code="code1", branch="b", role=role, slot=slot, reason=reason,
                   result=None if value is None else Result("val_bpb", value))
    for status, at in events:
        e = e.with_status(status, at=at)
    return e


def render(renderable) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


LAB = [
    exp("base1", "baseline", (S.STARTED, 0.0), (S.FINISHED, 10.0), role="baseline", value=1.00),
    exp("base2", "baseline", (S.STARTED, 0.0), (S.FINISHED, 10.0), role="baseline", value=1.02),
    exp("good", "lower lr", (S.STARTED, 20.0), (S.FINISHED, 30.0), value=0.97),
    exp("run1", "wider mlp", (S.QUEUED, 50.0), (S.STARTED, 100.0), slot="gpu-0"),
    exp("q1", "more warmup", (S.QUEUED, 400.0)),
    exp("q2", "less dropout", (S.QUEUED, 410.0), (S.SUBMITTED, 420.0)),
]


def test_status_shows_running_queue_best_budgets_and_anomalies() -> None:
    points = [MetricPoint("run1", s, "train_loss", 3.0 - s / 100, 100.0 + s) for s in range(51)]
    points.append(MetricPoint("run1", 50, "tok_per_s", 12345.0, 150.0))
    budget = BudgetUsage(usd=12.5, usd_limit=50.0, llm_usd=1.25, experiments=6,
                         experiments_limit=100, seconds=1800.0, seconds_limit=8 * 3600.0)
    anomalies = [Anomaly("run1", "stall", "no metric for 901s since its last metric")]
    text = render(status_from_experiments(LAB, metric="val_bpb", direction=Direction.MINIMIZE,
                                          latest=points, budget=budget,
                                          anomalies=anomalies, now=100.0 + 3723.0))
    assert "6 experiments: 3 finished, 1 queued, 1 started, 1 submitted" in text
    assert "best so far: good 'lower lr': val_bpb 0.97, +0.04 ± 0.017 vs main" in text
    run_line = next(ln for ln in text.splitlines() if "run1" in ln and "wider mlp" in ln)
    for cell in ("gpu-0", "1:02:03", "50", "2.5", "1.234e+04"):
        assert cell in run_line, (cell, run_line)
    assert text.index("more warmup") < text.index("less dropout")  # oldest first
    assert "$37.50 (75%)" in text  # money left
    llm = next(ln for ln in text.splitlines() if "LLM money" in ln)
    assert "$1.25" in llm and "no limit" in llm
    assert "94 (94%)" in text and "7.5 h (94%)" in text
    assert "stall" in text and "since its last metric" in text


def test_status_before_anything_ran_and_with_a_long_queue() -> None:
    queue = [exp(f"q{i}", f"idea {i}", (S.QUEUED, float(i))) for i in range(15)]
    text = render(status_from_experiments(queue, metric="val_bpb", direction=Direction.MINIMIZE,
                                          now=100.0, queue_rows=10))
    assert "no candidate has a result yet" in text
    assert "queue (15)" in text and "... and 5 more" in text
    assert "idea 9" in text and "idea 10" not in text
    assert "budgets" not in text and "anomalies" not in text


def test_status_shows_why_a_job_waits_or_is_stopping() -> None:
    """The loop keeps the backend's pending reason (e.g. SLURM's) in ``Experiment.reason``
    while a job waits, and the prune reason while a running job is being stopped."""
    lab = [
        exp("0007", "bigger batch", (S.QUEUED, 10.0), (S.SUBMITTED, 20.0),
            reason="Priority: waiting for higher-priority jobs"),
        exp("0008", "no reason yet", (S.QUEUED, 30.0)),
        exp("0009", "lagging", (S.STARTED, 5.0), slot="gpu-1",
            reason="pruned: median rule: train_loss 3.1 at step 400"),
        exp("0010", "healthy", (S.STARTED, 6.0), slot="gpu-2"),
    ]
    text = render(status_from_experiments(lab, metric="val_bpb", direction=Direction.MINIMIZE,
                                          now=100.0))
    queued = next(ln for ln in text.splitlines() if "0007" in ln)
    assert "Priority: waiting for higher-priority jobs" in queued and "submitted" in queued
    assert "-" in next(ln for ln in text.splitlines() if "0008" in ln)
    running = text[text.index("running (2)"):text.index("queue (2)")]
    assert "pruned: median rule" in running and "note" in running
    assert running.index("0009") < running.index("0010")


def test_the_loop_keeps_the_pending_reason_while_a_job_waits() -> None:
    submitted = exp("0011", "queued on slurm", (S.QUEUED, 1.0), (S.SUBMITTED, 2.0))
    waiting = with_wait_reason(submitted, JobState(JobStatus.PENDING, reason="Priority"))
    assert waiting.reason == "Priority"
    again = with_wait_reason(waiting, JobState(JobStatus.PENDING, reason="Resources"))
    assert again.reason == "Resources"
    assert with_wait_reason(again, JobState(JobStatus.PENDING)) is again  # nothing new
    failed = with_wait_reason(again, JobState(JobStatus.FAILED, reason="exit code 1"))
    assert failed.reason is None  # never mistaken for why it failed
    running = exp("0012", "runs", (S.STARTED, 1.0), reason="pruned: median rule")
    assert with_wait_reason(running, JobState(JobStatus.RUNNING)) is running

"""The loop's use of the optional backend capabilities, on a real toy lab with the real local
backend underneath: one ``submit_many`` per loop turn, budget reservations, per-experiment
resources, pending reasons, GPU metrics, hourly cleanup and disk use.

``PricedBackend`` is the real :class:`LocalBackend` (real processes, real logs) that also
prices jobs by flavor, reports a pending reason on a job's first poll (as SLURM does while a
job waits) and returns one GPU sample per job, so that the loop's side of each capability is
observable; what it adds is recorded for the assertions.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from toylab import make_toy_lab

from autolab.backends.local import LocalBackend
from autolab.run.assemble import make_roles
from autolab.run.jobs import Jobs
from autolab.run.ledger import Ledger, open_ledger
from autolab.run.loop import RunLoop, RunOptions
from autolab.run.proposals import Roles
from autolab.run.upkeep import Upkeep
from autolab_core.lab import Lab
from autolab_core.models import (
    ExperimentStatus,
    Hypothesis,
    JobHandle,
    JobSpec,
    JobState,
    JobStatus,
    MetricPoint,
)
from autolab_core.plugins import get_plugin_manager, lab_context, make_store
from autolab_core.vocab import Role

PRICES = {"small": 0.2, "big": 0.45}  # USD estimate per job, by flavor
PENDING = "pending in SLURM: Priority"


class PricedBackend(LocalBackend):
    name = "priced-local"

    def __init__(self, options: Any, context: Any) -> None:
        super().__init__(options, context)
        self.waves: list[list[str]] = []
        self.committed_at_submit: list[float] = []  # spent + reserved when a wave went out
        self.cleanups = 0
        self.resources: dict[str, dict[str, Any]] = {}
        self.polled: set[str] = set()
        self.seen_reasons: dict[str, str | None] = {}
        self.gpu_sent: set[str] = set()
        self.ledger: Ledger | None = None
        self.jobs_: Jobs | None = None

    def estimate_cost(self, spec: JobSpec) -> float | None:
        return PRICES[str(spec.resources.get("flavor", "small"))]

    def submit_many(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        self.waves.append([s.experiment_id for s in specs])
        self.resources.update({s.experiment_id: dict(s.resources) for s in specs})
        if self.jobs_ is not None:
            t = self.jobs_.budget.totals()
            self.committed_at_submit.append(t["spent"] + t["reserved"])
        return super().submit_many(specs)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        states = super().poll(handles)
        out = {}
        for h in handles:
            state = states[h.job_id]
            if h.job_id not in self.polled:  # the first answer: still waiting in the queue
                self.polled.add(h.job_id)
                out[h.job_id] = JobState(JobStatus.PENDING, reason=PENDING)
                continue
            if self.ledger is not None and h.experiment_id not in self.seen_reasons:
                exp = self.ledger.get(h.experiment_id)
                self.seen_reasons[h.experiment_id] = exp.reason if exp else None
            if state.status.terminal:  # real cost: half the estimate
                state = attrs.evolve(state, cost_usd=PRICES["small"] / 2)
            out[h.job_id] = state
        return out

    def system_metrics(self, handle: JobHandle) -> list[MetricPoint]:
        if handle.job_id in self.gpu_sent:
            return []
        self.gpu_sent.add(handle.job_id)
        return [MetricPoint(handle.experiment_id, 0, "sys/gpu_util", 87.5)]

    def cleanup(self) -> list[str]:
        self.cleanups += 1
        return []

    def disk_usage(self) -> int | None:
        return 4321


def quiet(msg: str) -> None:
    print(msg)


def build(lab: Lab, workers: int = 3, **kw: Any) -> tuple[RunLoop, PricedBackend]:
    pm = get_plugin_manager()
    backend = PricedBackend({"workers": workers}, lab_context(lab))
    ledger = open_ledger(lab, quiet, pm)
    jobs = Jobs(ledger, backend, make_store(lab, pm))
    backend.ledger, backend.jobs_ = ledger, jobs
    loop = RunLoop(ledger, jobs, Roles(*make_roles(lab, pm)),
                   RunOptions(workers=workers, poll_interval=0.05, **kw))
    return loop, backend


def test_one_submit_many_per_turn_and_two_concurrent_submits_never_overspend(tmp_path: Path) -> None:
    # $0.50 pays for two $0.20 reservations, not three: the third ready baseline of the first
    # wave waits (it is not rejected) until a job settles at its real cost ($0.10).
    lab = make_toy_lab(tmp_path / "lab", extra_config="\n[budget]\nusd = 0.5\n")
    loop, backend = build(lab, max_experiments=4)
    exps = loop.run()

    assert backend.waves[0] and len(backend.waves[0]) == 2, backend.waves  # one call, two jobs
    assert all(c <= 0.5 + 1e-9 for c in backend.committed_at_submit), backend.committed_at_submit
    totals = loop.jobs.budget.totals()
    assert totals["reserved"] == 0.0 and totals["spent"] <= 0.5 + 1e-9
    ran = [e for e in exps if e.status is ExperimentStatus.FINISHED]
    assert len(ran) >= 4  # the deferred baseline ran once money was settled
    assert abs(totals["spent"] - sum(e.cost_usd for e in exps)) < 1e-9
    refused = [e for e in exps if e.status is ExperimentStatus.REJECTED
               and "over budget" in (e.reason or "")]
    # a refusal only when nothing was in flight, and the run then stopped for money
    assert len(refused) <= 1
    assert loop.out_of_budget() is not None


def test_pending_reason_gpu_metrics_cleanup_and_disk_use(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    loop, backend = build(lab, workers=2, max_experiments=1)
    exps = loop.run()

    # the experiment showed the backend's pending reason while it waited, and lost it after
    assert backend.seen_reasons and set(backend.seen_reasons.values()) == {PENDING}
    finished = [e for e in exps if e.status is ExperimentStatus.FINISHED]
    assert finished and all(e.reason != PENDING for e in finished)
    # one GPU sample per job reached the metric store
    table = make_store(lab).query(names=["sys/gpu_util"])
    assert set(table.column("experiment_id").to_pylist()) == {e.id for e in exps if e.handle}
    assert backend.cleanups == 1  # at the start; the next one is due in an hour
    from autolab.reporting.lab import lab_status
    from autolab.reporting.status import read_disk_usage

    disk = read_disk_usage(lab.state_dir)
    assert disk is not None and disk["backend"] == 4321 and disk["state_dir"] > 0
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(lab_status(lab))
    assert "disk: backend priced-local 4.3 kB, lab state dir" in console.export_text()


def test_upkeep_removes_old_checkouts_hourly(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    loop, backend = build(lab, workers=2, max_experiments=1)
    exps = loop.run()
    jobs = loop.jobs
    failed = next(e for e in exps if e.handle is not None)
    # a failed experiment's checkout stays for a post-mortem ...
    jobs.ledger.put(attrs.evolve(failed).with_status(ExperimentStatus.FAILED, "test"))
    lab.export_tree(failed.commit, jobs.workdir(failed))
    upkeep = Upkeep(jobs, keep_checkouts_s=3600.0)
    now = jobs.ledger.get(failed.id).history[-1].at  # type: ignore[union-attr]
    assert upkeep.maybe_run(now + 60) and jobs.workdir(failed).exists()
    assert not upkeep.maybe_run(now + 1800)  # not due again within the hour
    # ... until it is older than keep_checkouts
    assert upkeep.maybe_run(now + 3700) and not jobs.workdir(failed).exists()
    assert backend.cleanups == 3  # the loop's start, and the two runs above


def test_experiment_resources_reach_the_job_spec_and_the_estimate(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    loop, backend = build(lab)
    ledger = loop.ledger
    h = Hypothesis(id="big", title="big machine", source="user", resources={"flavor": "big"})
    exp = ledger.new(h, Role.BASELINE, seed=7)
    exp = ledger.put(attrs.evolve(exp, commit=lab.main_commit(), attempts=1))
    spec = loop.jobs.job_spec(exp)
    assert spec.resources == {"flavor": "big"}
    assert backend.estimate_cost(spec) == PRICES["big"]
    # a round trip through the record keeps them (the inbox of `autolab try`)
    from autolab_core.models import to_dict

    assert Hypothesis.from_dict(to_dict(h)).resources == {"flavor": "big"}



def test_autolab_try_flavor_runs_the_idea_on_that_flavor(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab")
    bad = subprocess.run([sys.executable, "-m", "autolab", "try", "--lab", str(lab.root),
                          "--memory", "lots", "LR=0.02"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--memory 'lots': write a size such as 64G" in bad.stderr + bad.stdout
    done = subprocess.run([sys.executable, "-m", "autolab", "try", "--lab", str(lab.root),
                           "--flavor", "big", "--gpus", "2", "--memory", "512M", "LR=0.02"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loop, backend = build(lab, max_experiments=1)
    exps = loop.run()
    mine = [e for e in exps if e.hypothesis.source == "user"]
    assert mine and mine[0].hypothesis.resources == {"flavor": "big", "gpus": 2, "memory_gb": 0.5}
    assert backend.resources[mine[0].id] == {"flavor": "big", "gpus": 2, "memory_gb": 0.5}
    baseline = next(e for e in exps if e.role == Role.BASELINE)
    assert backend.resources[baseline.id] == {}  # the lab's defaults for everything else

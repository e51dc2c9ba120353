"""The slurm backend against what campus clusters do (issue 14), on the local cluster.

The cluster (``scripts/local-slurm.sh up``) has what these tests need, all real SLURM:
hidden partitions (``hidden``, MaxTime 5 min; ``broken``, whose only node is DOWN), CPU binding
(task/affinity), a compute-node view in which ``/node-local`` is a private empty tmpfs (slurmd
runs in its own mount namespace), an unprivileged submitting user, and preemption (``urgent``).
The first tests (reasons, limits and options parsing) need no cluster.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from autolab.backends import slurm_cli, slurm_reasons
from autolab.backends.slurm import SlurmBackend
from autolab_core.models import JobSpec, JobStatus
from autolab_core.testing import make_context, read_all_logs, wait_for
from tests.slurm_cluster import (
    LAB_USER,
    REPO,
    as_lab_user,
    job_field,
    require_cluster,
    sh,
    user_dir,
    wait_until,
)

slurm = pytest.mark.slurm
PY = sys.executable
LAB = "campus"


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        require_cluster()


def make(tmp_path: Path, **options: Any) -> SlurmBackend:
    return SlurmBackend({"poll_interval_s": 0.2, "probe": False, **options},
                        make_context(tmp_path, name=LAB))


def spec(tmp_path: Path, code: str, **kw: Any) -> JobSpec:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    kw.setdefault("experiment_id", f"c{uuid.uuid4().hex[:8]}")
    return JobSpec(command=(PY, "-c", code), workdir=str(workdir), **kw)


# -- without the cluster ----------------------------------------------------------------------
def test_pending_reasons_and_refusals_are_classified() -> None:
    assert "MaxTime" in (slurm_reasons.permanent_pending("PartitionTimeLimit") or "")
    assert "sacctmgr" in (slurm_reasons.permanent_pending("InvalidAccount") or "")
    assert slurm_reasons.permanent_pending("QOSMaxWallDurationPerJobLimit")
    assert slurm_reasons.permanent_pending("AssocMaxWallDurationPerJobLimit")
    for transient in ("Priority", "Resources", "QOSMaxJobsPerUserLimit", "BeginTime", ""):
        assert slurm_reasons.permanent_pending(transient) is None, transient
    assert slurm_reasons.nodes_unavailable("ReqNodeNotAvail, UnavailableNodes:gpu[01-04]")
    assert slurm_reasons.nodes_unavailable(  # SLURM 22.05's words on the local cluster
        "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions")
    assert slurm_reasons.transient_refusal(
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")
    assert slurm_reasons.transient_refusal("sbatch: error: Slurm temporarily unable to accept job")
    assert not slurm_reasons.transient_refusal(
        "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy")
    assert [slurm_reasons.backoff(n, 30) for n in (1, 2, 3, 10)] == [30, 60, 120, 600]


def test_partition_limits_and_associations_are_parsed() -> None:
    assert [slurm_cli.parse_duration_minutes(t) for t in ("1:00:00", "10:00", "2-00:00:00",
                                                          "infinite")] == [60, 10, 2880, None]
    # `sacctmgr -nP show assoc user=me format=account,partition,qos` on a campus cluster
    rows = slurm_cli.parse_associations("ml-lab||normal,long\nml-lab|gpu|gpu-normal\nphys|cpu|normal\n")
    assert slurm_cli.association_problem(rows, "ml-lab", "gpu", "gpu-normal") is None
    assert slurm_cli.association_problem(rows, None, None, None) is None
    bad_account = slurm_cli.association_problem(rows, "chem", None, None) or ""
    assert "account = 'chem' is not one of your accounts (ml-lab, phys)" in bad_account
    assert "sacctmgr show assoc user=$USER" in bad_account
    bad_partition = slurm_cli.association_problem(rows, "phys", "gpu", None) or ""
    assert "may not use partition = 'gpu'" in bad_partition
    bad_qos = slurm_cli.association_problem(rows, "ml-lab", "gpu", "high") or ""
    assert "qos = 'high' is not allowed" in bad_qos and "gpu-normal" in bad_qos


def test_gpu_srun_array_and_extra_options_reach_sbatch(tmp_path: Path) -> None:
    b = make(tmp_path, cpus_per_task=4, gres="gpu:a100:1", cpus_per_gpu=8, mem_per_gpu="40G",
             gpus="a100:1", srun_args=["--cpu-bind=cores"], array_parallelism=2,
             additional_parameters={"reservation": "ml", "exclusive": True})
    params = b._params(spec(tmp_path, "pass"))
    assert params["gres"] == "gpu:a100:1" and params["cpus_per_gpu"] == 8
    assert params["mem_per_gpu"] == "40G" and params["srun_args"] == ["--cpu-bind=cores"]
    assert params["array_parallelism"] == 2 and "gpus_per_task" not in params
    assert params["additional_parameters"]["gpus"] == "a100:1"
    assert params["additional_parameters"]["reservation"] == "ml"
    assert "export SRUN_CPUS_PER_TASK=4" in params["setup"]
    flags = b._flags()
    for flag in ("--gres=gpu:a100:1", "--cpus-per-gpu=8", "--mem-per-gpu=40G", "--gpus=a100:1",
                 "--reservation=ml", "--exclusive", "--cpus-per-task=4"):
        assert flag in flags, flags
    assert not any("srun" in f or "array" in f for f in flags)


# -- point 3: pending reasons, limits checked before the first job -------------------------------
@slurm
def test_check_sees_hidden_partitions_and_their_max_time(tmp_path: Path) -> None:
    # hidden from users (root sees every partition): plain sinfo omits it, the backend does not
    listed = as_lab_user(["sinfo", "--noheader", "--format=%P"]).stdout.split()
    assert "hidden" not in listed and "debug*" in listed
    seen = as_lab_user([PY, "-c", "from autolab.backends import slurm_cli; print(*slurm_cli.sinfo_limits())"])
    assert "hidden" in seen.stdout.split(), seen.stderr
    assert make(tmp_path, partition="hidden", time_limit="5m").check() is None
    too_long = make(tmp_path, partition="hidden", time_limit="10m").check() or ""
    assert "10 min ([backend.slurm] time_limit), exceeds partition 'hidden''s MaxTime of 5 min" in too_long
    assert "set [backend.slurm] time_limit to at most 5m" in too_long
    # the wall time a lab's [run] time_limit makes (2 min + 2 min grace) is checked too
    (tmp_path / "autolab.toml").write_text('[run]\ntime_limit = "9m"\n')
    assert "11 min ([run] time_limit plus 2 min)" in (make(tmp_path, partition="hidden").check() or "")
    assert "partition = 'nowhere' does not exist" in (make(tmp_path, partition="nowhere").check() or "")


@slurm
def test_pending_reason_is_shown_while_it_may_clear(tmp_path: Path) -> None:
    b = make(tmp_path, sbatch_args=["--hold"])  # held by its user: pending, for a reason that clears
    h = b.submit(spec(tmp_path, "print('released')"))
    state = wait_for(b, h, lambda s: "JobHeldUser" in (s.reason or ""), timeout=20)
    assert state.status is JobStatus.PENDING and state.reason == "pending in SLURM: JobHeldUser"
    sh("scontrol", "release", h.job_id)
    assert wait_for(b, h).status is JobStatus.SUCCEEDED


@slurm
def test_job_on_down_nodes_fails_with_slurms_reason(tmp_path: Path) -> None:
    b = make(tmp_path, partition="broken")
    h = b.submit(spec(tmp_path, "print('never')"))
    state = wait_for(b, h, timeout=30)
    assert state.status is JobStatus.FAILED, state
    assert "SLURM will never start job" in (state.reason or "")
    # SLURM 22.05 words it either way, depending on when the scheduler last looked
    assert re.search(r"'(ReqNodeNotAvail|Nodes required for job are DOWN)", state.reason or "")
    assert "every node of partition 'broken' is down or drained" in (state.reason or "")
    wait_until(lambda: job_field(h.job_id, "State") in ("CANCELLED", ""), what="the job to be cancelled")


@slurm
def test_wall_time_over_a_lowered_max_time_fails_naming_the_fix(tmp_path: Path) -> None:
    """An admin lowers MaxTime under a queued job: SLURM says PartitionTimeLimit for ever."""
    b = make(tmp_path, partition="broken", time_limit="3m")
    h = b.submit(spec(tmp_path, "print('never')"))
    try:
        sh("scontrol", "update", "PartitionName=broken", "MaxTime=1")
        wait_until(lambda: "PartitionTimeLimit" in job_field(h.job_id, "Reason"), timeout=30,
                   what="SLURM to say PartitionTimeLimit")
        state = wait_for(b, h, timeout=20)
    finally:
        sh("scontrol", "update", "PartitionName=broken", "MaxTime=10")
    assert state.status is JobStatus.FAILED
    assert "'PartitionTimeLimit'" in (state.reason or "") and "MaxTime" in (state.reason or "")
    assert "lower [backend.slurm] time_limit" in (state.reason or "")


@slurm
def test_unknown_refusal_stops_and_transient_one_backs_off(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from autolab_core.errors import ConfigError

    b = make(tmp_path, sbatch_args=["--licenses=nowhere:1"])  # a refusal naming no option
    with pytest.raises(ConfigError, match=r"sbatch refused the job: .*Invalid license specification"):
        b.submit(spec(tmp_path, "pass"))
    assert not b.store.has_queue()
    # the controller unreachable (no sbatch at all): postponed, with growing waits
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("squeue", "sinfo", "scancel", "srun"):
        os.symlink(shutil.which(tool), bin_dir / tool)  # type: ignore[arg-type]
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: "
                                    "Unable to contact slurm controller (connect failure)' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    b2 = make(tmp_path)
    h = b2.submit(spec(tmp_path, "print('later')"))
    assert h.job_id.startswith("local-") and b2._pump_failures == 1
    first_wait = b2._pump_retry_at - time.monotonic()
    b2._pump_retry_at = 0.0
    b2.poll([h])
    assert b2._pump_failures == 2 and b2._pump_retry_at - time.monotonic() > first_wait + 20
    assert "Unable to contact slurm controller" in (b2.poll([h])[h.job_id].reason or "")
    monkeypatch.undo()
    b2._pump_retry_at = 0.0
    assert wait_for(b2, h).status is JobStatus.SUCCEEDED
    assert "later" in read_all_logs(b2, h)


# -- point 5: one queue entry per experiment; cancel reaches every job ---------------------------
@slurm
def test_postponed_resubmission_stays_one_entry_and_cancel_reaches_all(tmp_path: Path) -> None:
    b = make(tmp_path, max_retries=2)
    code = "import os, time; print('attempt', os.environ['SLURM_JOB_ID'], flush=True); time.sleep(120)"
    h = b.submit(spec(tmp_path, code, experiment_id=f"dup-{uuid.uuid4().hex[:6]}"))
    wait_until(lambda: "attempt" in b.logs(h).text, what="the job to start")
    b._pump_retry_at = time.monotonic() + 3600  # as after a failed sbatch: resubmission postponed
    sh("sbatch", "--parsable", "--partition=urgent", "--exclusive", "--job-name=urgent-dup",
       "--output=/dev/null", "--wrap", "sleep 1")
    wait_until(lambda: job_field(h.job_id, "State") == "PREEMPTED", timeout=30, what="preemption")
    run = b._run(h)
    for _ in range(6):  # every poll sees the old job PREEMPTED
        assert b.poll([h])[h.job_id].status is JobStatus.PENDING
        b._rows_at = float("-inf")
    assert [r.path for _, r in b.store.queued()] == [run.path]  # one entry, not six
    b._pump_retry_at = 0.0
    wait_until(lambda: b.poll([h]) and read_all_logs(b, h, settle=0).count("attempt") == 2,
               timeout=40, what="the one resubmission to run")
    attempts = [a["job_id"] for a in run.attempts()]
    assert len(attempts) == 2 and f"attempt {attempts[1]}" in read_all_logs(b, h, settle=0)
    name = f"autolab-{LAB}-{h.experiment_id}"
    assert len(sh("squeue", "--noheader", "--states=all", f"--name={name}", "--format=%i").split()) == 2
    b.cancel(h)
    assert wait_for(b, h).status is JobStatus.CANCELLED
    wait_until(lambda: job_field(attempts[1], "State") == "CANCELLED", what="the retry to be cancelled")


@slurm
def test_failed_scancel_warns_and_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    b = make(tmp_path)
    h = b.submit(spec(tmp_path, "import time; time.sleep(60)"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text("#!/bin/sh\necho 'scancel: error: Kill job error on job id "
                                     "1: Access/permission denied' >&2\nexit 1\n")
    (bin_dir / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with caplog.at_level(logging.WARNING):
        b.cancel(h)  # must not raise
    assert "Access/permission denied" in caplog.text and f"scancel {h.job_id}" in caplog.text
    monkeypatch.undo()
    sh("scancel", h.job_id)
    assert wait_for(b, h).status is JobStatus.CANCELLED


# -- point 6: squeue backs off during an outage -------------------------------------------------
@slurm
def test_squeue_outage_backs_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = make(tmp_path, poll_interval_s=1)
    h = b.submit(spec(tmp_path, "print('x')"))
    calls = []
    real = slurm_cli.squeue

    def down(user: str, names: Any = ()) -> Any:
        calls.append(time.monotonic())
        raise slurm_cli.BackendError("squeue did not answer within 30 s: is the SLURM controller up?")

    monkeypatch.setattr(slurm_cli, "squeue", down)
    b._rows_at = float("-inf")
    for _ in range(20):
        b.poll([h])
        time.sleep(0.1)
    assert len(calls) == 2  # at 0 s and after the first 1 s wait; the next wait is 2 s
    assert b._squeue_retry_at - calls[-1] == pytest.approx(2.0, abs=0.2)
    monkeypatch.setattr(slurm_cli, "squeue", real)
    b._squeue_retry_at = 0.0
    assert wait_for(b, h).status is JobStatus.SUCCEEDED


# -- point 4: python once, arrays with a parallelism limit ---------------------------------------
@slurm
def test_python_wrapper_applies_once(tmp_path: Path) -> None:
    count = tmp_path / "wrapper-calls"
    wrapper = tmp_path / "wrapped-python"
    wrapper.write_text(f"#!/bin/sh\necho x >> {count}\nexec {PY} \"$@\"\n")
    wrapper.chmod(0o755)
    b = make(tmp_path, python=str(wrapper))
    h = b.submit(spec(tmp_path, "import sys; print('ran with', sys.executable)"))
    assert wait_for(b, h).status is JobStatus.SUCCEEDED
    assert f"ran with {PY}" in read_all_logs(b, h)
    assert count.read_text().count("x") == 1  # submitit's launcher only, not the command too


@slurm
def test_ready_candidates_go_out_as_one_throttled_array(tmp_path: Path) -> None:
    b = make(tmp_path, array=True, array_parallelism=1)
    handles = b.submit_many([spec(tmp_path, f"print('task {i}')") for i in range(3)])
    array_id = handles[0].job_id.split("_")[0]
    assert [h.job_id for h in handles] == [f"{array_id}_{i}" for i in range(3)]
    assert "ArrayTaskThrottle=1" in sh("scontrol", "show", "job", array_id)
    for i, h in enumerate(handles):
        assert wait_for(b, h).status is JobStatus.SUCCEEDED
        assert f"task {i}" in read_all_logs(b, h)


# -- point 7: cleanup and disk use ------------------------------------------------------------------
@slurm
def test_cleanup_removes_finished_job_folders_only(tmp_path: Path) -> None:
    b = make(tmp_path, retention="0s")
    done = b.submit(spec(tmp_path, "print('x' * 10000)"))
    assert wait_for(b, done).status is JobStatus.SUCCEEDED
    live = b.submit(spec(tmp_path, "import time; time.sleep(30)"))
    wait_for(b, live, lambda s: s.status is JobStatus.RUNNING)
    before = b.disk_usage()
    assert before > 10000
    assert b.cleanup() == [done.experiment_id]
    assert not Path(done.data["run_dir"]).exists() and Path(live.data["run_dir"]).exists()
    assert not list(b.store.submitit_dir.glob(f"{done.job_id}_*"))
    assert list(b.store.submitit_dir.glob(f"{live.job_id}_*"))
    assert b.disk_usage() < before
    assert make(tmp_path, retention="1h").cleanup() == []  # nothing ended over an hour ago
    b.cancel(live)


# -- point 2: the shared-storage probe ------------------------------------------------------------
@slurm
def test_probe_passes_on_shared_storage_and_is_remembered(tmp_path: Path) -> None:
    b = make(tmp_path, probe=True)
    assert b.check() is None
    ok = json.loads((b.store.root / "probe-ok.json").read_text())
    assert ok["job_id"] and job_field(ok["job_id"], "State") in ("COMPLETED", "")
    assert b.check() is None
    assert json.loads((b.store.root / "probe-ok.json").read_text()) == ok  # no second job


@slurm
def test_probe_names_a_path_compute_nodes_cannot_see(tmp_path: Path) -> None:
    local = Path("/node-local") / f"lab-{uuid.uuid4().hex[:8]}"  # the login node's own disk
    local.mkdir(parents=True)
    try:
        problem = make(local, probe=True).check() or ""
        assert f"a compute node cannot see {local}/.autolab/probe" in problem
        assert "must be shared between the login node" in problem
        assert "[backend.slurm] folder" in problem
        # job files on shared storage are not enough: the checkouts live in the lab
        shared = make(local, probe=True, folder=str(tmp_path / "jobs")).check() or ""
        assert f"cannot see {local}/.autolab/probe" in shared
    finally:
        shutil.rmtree(local)


@slurm
def test_probe_says_when_the_job_python_cannot_import_the_runner(tmp_path: Path) -> None:
    problem = make(tmp_path, probe=True, python=f"{PY} -S -E").check() or ""
    assert "could not import the job runner" in problem and "ModuleNotFoundError" in problem
    assert "[backend.slurm] setup" in problem


@slurm
def test_autolab_run_on_node_local_lab_stops_with_the_probe_message(tmp_path: Path) -> None:
    """Not "main itself fails to run": the run stops before any job with the probe's words."""
    from tests.toylab import make_toy_lab

    root = Path("/node-local") / f"lab-{uuid.uuid4().hex[:8]}"
    try:
        make_toy_lab(root, extra_config="")
        cfg = (root / "autolab.toml").read_text().replace('name = "local"', 'name = "slurm"')
        (root / "autolab.toml").write_text(cfg)
        subprocess.run(["git", "-C", str(root), "commit", "-qam", "slurm"], check=True)
        proc = subprocess.run([PY, "-m", "autolab", "run", "--lab", str(root), "-n", "1"],
                              capture_output=True, text=True, timeout=120, cwd=root)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "must be shared between the login node" in out and "main itself" not in out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- point 8: an unprivileged user, CPU binding --------------------------------------------------
AFFINITY = """
import getpass, sys
from pathlib import Path
from autolab.backends.slurm import SlurmBackend
from autolab_core.models import JobSpec, JobStatus
from autolab_core.testing import make_context, read_all_logs, wait_for
tmp = Path(sys.argv[1])
code = "import os, getpass; print('cpus', len(os.sched_getaffinity(0)), 'user', getpass.getuser())"
for cpus in (1, 2):
    b = SlurmBackend({"cpus_per_task": cpus, "poll_interval_s": 0.2, "probe": cpus == 2},
                     make_context(tmp, name="campus"))
    assert b.check() is None, b.check()
    h = b.submit(JobSpec(f"aff{cpus}", (sys.executable, "-c", code), str(tmp)))
    assert wait_for(b, h).status is JobStatus.SUCCEEDED
    print(getpass.getuser(), read_all_logs(b, h).strip(), flush=True)
"""


@slurm
def test_unprivileged_user_jobs_are_bound_to_the_cpus_they_asked_for() -> None:
    work = user_dir(f"aff-{uuid.uuid4().hex[:8]}")
    proc = as_lab_user([PY, "-c", AFFINITY, str(work)], cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [f"{LAB_USER} cpus 1 user {LAB_USER}", f"{LAB_USER} cpus 2 user {LAB_USER}"], lines
    script = next(Path(work, ".autolab/plugins/slurm/submitit").glob("*_submission.sh")).read_text()
    assert "export SRUN_CPUS_PER_TASK=" in script

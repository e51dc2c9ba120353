"""The slurm backend on a real one-node SLURM cluster (Debian's SLURM 22.05, no accounting).

Start the cluster with ``scripts/local-slurm.sh up`` (as root). When it is not up these tests
FAIL with that instruction, unless ``AUTOLAB_SKIP_SLURM=1`` is set. Nothing is mocked: jobs
go through submitit and sbatch, run under slurmd, and are watched with squeue; preemption is
real (an exclusive job in the higher-tier ``urgent`` partition cancels ``debug`` jobs).

The first tests (parsing and validation) need no cluster and carry no ``slurm`` mark. After
them the order matters a little: the preemption test runs first, before the module's
long-running wall-time job starts (an exclusive urgent job would preempt that too), and the
wall-time job is checked last, so that SLURM's ~70 s to kill it overlap the other tests.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from autolab.backends import slurm_cli
from autolab.backends.slurm import SlurmBackend, _complete_utf8
from autolab.backends.slurm_options import SlurmOptions, parse_sbatch_args
from autolab_core.config import parse_options
from autolab_core.errors import ConfigError
from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus, JobSpec, JobStatus
from autolab_core.testing import JobBackendContract, make_context, read_all_logs, wait_for
from tests.slurm_cluster import REPO, job_field, my_active_jobs, require_cluster, sh, wait_until
from tests.toylab import CONFIG, PREPARE, TRAIN

slurm = pytest.mark.slurm
PY = sys.executable
LAB = "slurmtest"
WALLTIME_NAME = f"autolab-{LAB}-walltime"


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        require_cluster()


def make(tmp_path: Path, **options: Any) -> SlurmBackend:
    return SlurmBackend({"poll_interval_s": 0.2, **options}, make_context(tmp_path, name=LAB))


def spec(tmp_path: Path, code: str, **kw: Any) -> JobSpec:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    kw.setdefault("experiment_id", f"e{time.time_ns() % 10**9}")
    return JobSpec(command=(PY, "-c", code), workdir=str(workdir), **kw)


# -- without the cluster: parsing and validation ----------------------------------------------
def test_options_are_validated_naming_the_option(tmp_path: Path) -> None:
    bad = {
        "mem": ("4 gigs", "mem = '4 gigs' is not a SLURM memory size"),
        "sbatch_args": (["-x"], "sbatch_args entry '-x' is not a long sbatch option"),
        "max_queued": (0, "max_queued must be positive"),
        "max_retries": (-1, "max_retries must be >= 0"),
        "cpus_per_task": ("2", "cpus_per_task = '2' has the wrong type"),
        "time_limit": ("forever", "time_limit: expected a duration"),
        "partition": ("", "partition is empty"),
        "qeue": ("x", "unknown key 'qeue'; valid keys: account, additional_parameters, array"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=re.escape(f"[backend.slurm] {message}")):
            SlurmBackend({key: value}, make_context(tmp_path))
    opts = parse_options(SlurmOptions, {"time_limit": "90m", "sbatch-args": ["--exclusive",
                                        "--reservation=ml"]}, "backend.slurm")
    assert opts.minutes(30) == 90 and SlurmOptions().minutes(30) == 3
    assert SlurmOptions().minutes(None) is None
    assert parse_sbatch_args(opts.sbatch_args) == {"exclusive": True, "reservation": "ml"}


def test_an_experiments_resources_win_over_the_lab_options(tmp_path: Path) -> None:
    """``autolab try --gpus 2 --memory 64G``: the count replaces the lab's, the GPU type stays."""
    asks = JobSpec("e", ("true",), ".", resources={"gpus": 2, "memory_gb": 64, "cpus": 8})
    b = make(tmp_path, gres="gpu:a100:1", mem="4G", cpus_per_task=2)
    assert {"--gres=gpu:a100:1", "--mem=4G", "--cpus-per-task=2"} <= set(b._flags())
    assert {"--gres=gpu:a100:2", "--mem=64G", "--cpus-per-task=8"} <= set(b._flags(asks))
    assert "--gpus=a100:2" in make(tmp_path, gpus="a100:1")._flags(asks)
    assert "--gpus=2" in make(tmp_path, gpus=1)._flags(asks)
    plain = make(tmp_path)._flags(asks)
    assert "--gpus-per-task=2" in plain and not any(f.startswith("--gres") for f in plain)
    # different resources never share an array: the wave groups by these parameters
    assert make(tmp_path)._params(asks) != make(tmp_path)._params(JobSpec("f", ("true",), "."))


def test_available_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "sbatch is not on PATH" in (SlurmBackend.available() or "")


def test_squeue_and_sacct_output_parsing() -> None:
    text = ("12_3|RUNNING|None|0|2026-11-27T13:18:43|2026-11-27T14:18:43|vm|debug|autolab-x-e1|/a|b|\n"
            "13|PENDING|BeginTime|2|N/A|N/A||hidden|autolab-x-e2|(null)|\n")
    rows = slurm_cli.parse_squeue(text)
    assert rows["12_3"].state == "RUNNING" and rows["12_3"].nodes == "vm"
    assert rows["12_3"].comment == "/a|b" and rows["12_3"].start is not None
    assert rows["13"].restarts == 2 and rows["13"].start is None and rows["13"].comment == ""
    assert rows["13"].partition == "hidden" and rows["12_3"].partition == "debug"
    acct = slurm_cli.parse_sacct("7|CANCELLED by 0|0:15|2026-11-27T13:18:43|Unknown|vm|n\n")
    assert acct["7"].state == "CANCELLED" and acct["7"].exit_code == 0 and acct["7"].end is None


def test_sbatch_refusals_name_the_option() -> None:
    """The messages are SLURM 22.05's own, captured from the local cluster."""
    cases = {
        "sbatch: error: Batch job submission failed: Requested time limit is invalid "
        "(missing or exceeds some limit)": "time_limit",
        "sbatch: error: invalid partition specified: nope": "partition",
        "sbatch: error: Memory specification can not be satisfied; sbatch: error: Batch job "
        "submission failed: Requested node configuration is not available": "mem",
        "sbatch: error: Batch job submission failed: More processors requested than permitted":
            "cpus_per_task",
        "sbatch: error: Invalid generic resource (gres) specification": "gpus_per_task",
        "sbatch: error: Batch job submission failed: Invalid feature specification": "constraint",
        "sbatch: error: Batch job submission failed: Invalid qos specification": "qos",
        "sbatch: error: Batch job submission failed: Invalid account or account/partition "
        "combination specified": "account",
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller": None,
    }
    for message, option in cases.items():
        assert slurm_cli.option_at_fault(message) == option, message


def test_logs_never_split_a_character() -> None:
    data = "é€😀".encode()
    assert [_complete_utf8(data[:n]) for n in range(len(data) + 1)] == [
        0, 0, 2, 2, 2, 5, 5, 5, 5, 9]


# -- first: real preemption (it would also preempt the wall-time job started below) ----------
@slurm
def test_preempted_job_is_resubmitted_under_the_same_handle(tmp_path: Path) -> None:
    b = make(tmp_path, max_retries=1)
    code = "import os, time; print('attempt', os.environ['SLURM_JOB_ID'], flush=True); time.sleep(60)"
    h = b.submit(spec(tmp_path, code, experiment_id="preempt-me"))
    wait_until(lambda: "attempt" in b.logs(h).text, what="the job to start")
    sh("sbatch", "--parsable", "--partition=urgent", "--exclusive", "--job-name=urgent-test",
       "--output=/dev/null", "--wrap", "sleep 1")

    def two_attempts() -> bool:
        b.poll([h])
        return read_all_logs(b, h, settle=0).count("attempt") == 2

    wait_until(two_attempts, timeout=40, what="the preempted job to run again")
    assert job_field(h.job_id, "State") == "PREEMPTED"
    # the handle's state follows the new SLURM job once squeue reports it (polls are cached
    # between squeue answers, so the first RUNNING state may still carry the old id)
    state = wait_for(b, h, lambda s: s.status is JobStatus.RUNNING
                     and s.hardware.get("slurm_job_id") not in (None, h.job_id))
    new_id = state.hardware.get("slurm_job_id")
    assert new_id and new_id != h.job_id  # a new SLURM job, followed through the same handle
    assert "--- autolab: retry on SLURM job" in read_all_logs(b, h, settle=0)
    assert b.find("preempt-me").job_id == h.job_id  # type: ignore[union-attr]
    b.cancel(h)
    assert wait_for(b, h).status is JobStatus.CANCELLED
    assert job_field(new_id, "State") == "CANCELLED"


# -- a job that only SLURM's own wall time stops; it runs while the other tests do ------------
@pytest.fixture(scope="module")
def walltime_job(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_cluster()  # module fixtures run before the per-test check
    tmp = tmp_path_factory.mktemp("walltime")
    b = make(tmp, time_limit="1m")  # SLURM --time=1; the spec has no limit of its own
    code = "import time; print('sleeping', flush=True); time.sleep(600)"
    h = b.submit(spec(tmp, code, experiment_id="walltime"))
    yield b, h
    b.cancel(h)


@slurm
def test_walltime_job_runs(walltime_job: Any) -> None:
    b, h = walltime_job
    assert wait_for(b, h, lambda s: s.status is not JobStatus.PENDING).status is JobStatus.RUNNING


@slurm
class TestSlurmContract(JobBackendContract):
    timeout = 60.0

    def make_backend(self, tmp_path: Path) -> SlurmBackend:
        return make(tmp_path)


@slurm
def test_hardware_and_logs_while_running(tmp_path: Path) -> None:
    b = make(tmp_path)
    h = b.submit(spec(tmp_path, "import time; print('first', flush=True); time.sleep(3); print('last')"))
    wait_until(lambda: "first" in b.logs(h).text, what="the first line")
    state = b.poll([h])[h.job_id]
    assert state.status is JobStatus.RUNNING and "last" not in b.logs(h).text  # streamed live
    assert state.hardware["node"] == socket.gethostname().split(".")[0]
    assert state.hardware["cpu"] and state.hardware["slurm_job_id"] == h.job_id
    assert "gpu" not in state.hardware  # this machine has none (nvidia-smi is absent)
    assert job_field(h.job_id, "TimeLimit") == "1:00:00"  # no limit asked: the partition's
    assert wait_for(b, h).status is JobStatus.SUCCEEDED
    assert b.slot_of(h) == state.hardware["node"]
    fresh = make(tmp_path)  # no memory: the final state comes from the files
    assert fresh.poll([h])[h.job_id].status is JobStatus.SUCCEEDED


@slurm
def test_requeued_job_is_retried_then_given_up(tmp_path: Path) -> None:
    """``scontrol requeue`` is what SLURM does to a job on preemption with PreemptMode=REQUEUE."""
    b = make(tmp_path, max_retries=1)
    code = ("import os, time; print('run', os.environ.get('SLURM_RESTART_COUNT', '0'), flush=True)"
            "; time.sleep(60)")
    h = b.submit(spec(tmp_path, code))
    wait_until(lambda: "run 0" in b.logs(h).text, what="the first run")
    sh("scontrol", "requeue", h.job_id)
    state = wait_for(b, h, lambda s: s.status is JobStatus.PENDING)
    assert "requeued by SLURM" in (state.reason or "") and "retry 1 of 1" in (state.reason or "")
    # SLURM restarts a requeued job after cred_expire (5 s on the local cluster, 120 s default)
    wait_until(lambda: "run 1" in b.logs(h).text, what="the second run")
    assert "--- autolab: retry on SLURM job" in b.logs(h).text
    sh("scontrol", "requeue", h.job_id)
    state = wait_for(b, h)
    assert state.status is JobStatus.PREEMPTED, state
    assert "gave up after max_retries = 1" in (state.reason or "")
    wait_until(lambda: job_field(h.job_id, "State") == "CANCELLED", what="the job to be cancelled")


CRASH = """
import os, sys
from pathlib import Path
from autolab.backends.slurm import SlurmBackend
from autolab_core.models import JobSpec
from autolab_core.testing import make_context
tmp = Path(sys.argv[1])
b = SlurmBackend({}, make_context(tmp, name=sys.argv[3]))
def die(run, job_id):  # the orchestrator dies the moment sbatch has answered
    print(job_id, flush=True)
    os._exit(9)
b._record = die
b.submit(JobSpec(sys.argv[2], (sys.executable, "-c", "print('ran once')"), str(tmp / "work")))
"""


@slurm
def test_crash_between_sbatch_and_record_never_submits_twice(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    exp_id = f"crashy-{uuid.uuid4().hex[:6]}"  # job names must not collide with earlier runs
    proc = subprocess.run([PY, "-c", CRASH, str(tmp_path), exp_id, LAB], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 9, proc.stderr
    job_id = proc.stdout.strip()
    b = make(tmp_path)
    b.poll([])  # takes over the local queue: must recognise the job SLURM already has
    h = b.find(exp_id)
    assert h is not None and h.job_id == job_id and h.experiment_id == exp_id
    assert wait_for(b, h).status is JobStatus.SUCCEEDED
    names = sh("squeue", "--noheader", "--states=all", f"--name=autolab-{LAB}-{exp_id}", "--format=%i")
    assert names.split() == [job_id]
    assert read_all_logs(b, h).count("ran once") == 1
    again = make(tmp_path).reattach(job_id)
    assert again is not None and again.experiment_id == exp_id


@slurm
def test_max_queued_keeps_the_rest_waiting_locally(tmp_path: Path) -> None:
    # The limit counts all of the user's jobs: let earlier tests' jobs end (SLURM finishes a job
    # a moment after its exit record said it was done), leaving only the wall-time job.
    def others_gone() -> bool:
        names = sh("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING", "--format=%j")
        return all(n == WALLTIME_NAME for n in names.split())

    wait_until(others_gone, what="earlier tests' jobs to end")
    base = my_active_jobs()
    b = make(tmp_path, max_queued=base + 2)
    t0 = time.monotonic()
    code = "import sys, time; time.sleep(1.5); print('job', sys.argv[1])"
    handles = [b.submit(JobSpec(f"q{i}", (PY, "-c", code, str(i)), str(tmp_path)))
               for i in range(4)]
    assert time.monotonic() - t0 < 5  # submit never waits for room
    assert [h.job_id.startswith("local-") for h in handles] == [False, False, True, True]
    peak = 0

    def all_done() -> bool:
        nonlocal peak
        peak = max(peak, my_active_jobs())
        return all(s.status.terminal for s in b.poll(handles).values())

    wait_until(all_done, timeout=60, what="all four jobs")
    assert {s.status for s in b.poll(handles).values()} == {JobStatus.SUCCEEDED}
    assert peak <= base + 2
    for i, h in enumerate(handles):
        assert f"job {i}" in read_all_logs(b, h)


@slurm
def test_submit_many_as_one_job_array_with_setup_lines(tmp_path: Path) -> None:
    b = make(tmp_path, array=True, setup=["export AUTOLAB_SETUP_RAN=yes"])
    code = "import os, sys; print('task', sys.argv[1], os.environ['AUTOLAB_SETUP_RAN'])"
    handles = b.submit_many(
        [JobSpec(f"wave{i}", (PY, "-c", code, str(i)), str(tmp_path)) for i in range(3)]
    )
    array_id = handles[0].job_id.split("_")[0]
    assert [h.job_id for h in handles] == [f"{array_id}_{i}" for i in range(3)]
    for i, h in enumerate(handles):
        assert wait_for(b, h).status is JobStatus.SUCCEEDED
        assert f"task {i} yes" in read_all_logs(b, h)
    assert b.find("wave1").job_id == f"{array_id}_1"  # type: ignore[union-attr]


@slurm
def test_options_slurm_refuses_name_the_option(tmp_path: Path) -> None:
    work = spec(tmp_path, "print(1)")
    b = make(tmp_path, time_limit="2h")  # the debug partition allows 60 min
    assert "time_limit" in (b.check() or "")
    with pytest.raises(ConfigError, match=r"\[backend.slurm\] time_limit = 7200 s: SLURM refused"):
        b.submit(work)
    assert not b.store.has_queue()  # nothing of the refused job lingers or waits forever
    refused = b.find(work.experiment_id)
    assert refused is not None and b.poll([refused])[refused.job_id].status is JobStatus.FAILED
    with pytest.raises(ConfigError, match=r"time_limit: SLURM refused a wall time of 182 min"):
        make(tmp_path).submit(spec(tmp_path, "print(1)", time_limit_s=3 * 3600))
    with pytest.raises(ConfigError, match=r"mem = '900G': SLURM refused"):
        make(tmp_path, mem="900G").submit(work)
    with pytest.raises(ConfigError, match=r"cpus_per_task = 64: SLURM refused"):
        make(tmp_path, cpus_per_task=64).submit(work)
    nope = make(tmp_path, partition="nope")
    assert "partition = 'nope' does not exist" in (nope.check() or "")
    with pytest.raises(ConfigError, match=r"partition = 'nope': SLURM refused"):
        nope.submit(work)
    with pytest.raises(ConfigError, match=r"mem = 'lots' is not a SLURM memory size"):
        make(tmp_path, mem="lots")
    assert make(tmp_path, partition="debug", mem="1G", cpus_per_task=1).check() is None


@slurm
def test_job_over_its_memory_is_oom(tmp_path: Path) -> None:
    """The local cluster kills jobs over --mem (JobAcctGatherParams=OverMemoryKill, 1 s checks)."""
    b = make(tmp_path, mem="100M")
    code = ("import time; x = bytearray(400 * 2**20); x[::4096] = b'x' * len(x[::4096]); "
            "print('allocated', flush=True); time.sleep(30)")
    h = b.submit(spec(tmp_path, code))
    state = wait_for(b, h, timeout=30)
    assert state.status is JobStatus.OOM, state
    assert "exceeding its memory (mem = '100M')" in (state.reason or "")
    assert "raise [backend.slurm] mem" in (state.reason or "")


@slurm
def test_job_that_cannot_start_fails_with_the_reason(tmp_path: Path) -> None:
    b = make(tmp_path, python="/nonexistent/python3")
    h = b.submit(spec(tmp_path, "print('never')"))
    state = wait_for(b, h)
    assert state.status is JobStatus.FAILED
    assert "before its command started" in (state.reason or "")
    assert "/nonexistent/python3" in (state.reason or "")


@slurm
def test_autolab_run_end_to_end_on_slurm(tmp_path: Path) -> None:
    """The real CLI in a subprocess: baselines and one candidate run as SLURM jobs, are scored."""
    root = tmp_path / "lab"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text(PREPARE.format(noise=0.01, flat=False))
    local = '[backend]\nname = "local"\n'
    assert local in CONFIG
    config = CONFIG.replace(local, (
        '[backend]\nname = "slurm"\n\n[backend.slurm]\npartition = "debug"\n'
        'cpus_per_task = 1\nmem = "512M"\npoll_interval_s = 0.5\n'
    )).replace("noise_runs = 3", "noise_runs = 2").replace("confirm_runs = 2", "confirm_runs = 1")
    Lab.init(root, config_text=config)
    proc = subprocess.run(
        [PY, "-m", "autolab", "run", "--lab", str(root), "-n", "1", "-w", "3"],
        capture_output=True, text=True, timeout=120, cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"backend\s+slurm", proc.stdout), proc.stdout  # the settings header
    finished = [e for e in Lab(root).load_experiments() if e.status is ExperimentStatus.FINISHED]
    assert {e.role for e in finished} >= {"baseline", "candidate"}, proc.stdout
    for exp in finished:
        assert exp.result is not None and exp.result.trusted
        assert exp.handle is not None and exp.handle.backend == "slurm"
        assert job_field(exp.handle.job_id, "Name") == f"autolab-toy-{exp.id}"
        assert job_field(exp.handle.job_id, "State") == "COMPLETED"
        assert exp.hardware.get("node") == socket.gethostname().split(".")[0]
    assert Lab(root).scores()


# -- last: the wall-time job has had a minute by now ---------------------------------------------
@slurm
def test_slurm_wall_time_is_a_timeout(walltime_job: Any) -> None:
    b, h = walltime_job
    state = wait_for(b, h, timeout=150, interval=0.5)
    assert state.status is JobStatus.TIMEOUT, state
    assert "wall time" in (state.reason or "")
    assert job_field(h.job_id, "State") == "TIMEOUT"

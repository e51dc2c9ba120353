"""The ``local`` backend, with real processes: the contract suite plus slots, queueing,
process-group kills, time limits, and orchestrator/supervisor crashes."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autolab.backends.local import LocalBackend
from autolab_core.errors import ConfigError
from autolab_core.models import JobHandle, JobSpec, JobStatus
from autolab_core.plugins import PluginManager
from autolab_core.testing import JobBackendContract, make_context, read_all_logs, wait_for

PY = sys.executable


def make(tmp_path: Path, **options: object) -> LocalBackend:
    return LocalBackend({"kill_grace_s": 1, **options}, make_context(tmp_path))


def spec(tmp_path: Path, code: str, exp: str = "exp", **kw: object) -> JobSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return JobSpec(experiment_id=exp, command=(PY, "-c", textwrap.dedent(code)),
                   workdir=str(work), **kw)  # type: ignore[arg-type]


def job_dir(tmp_path: Path, handle: JobHandle) -> Path:
    return tmp_path / ".autolab" / "plugins" / "local" / "jobs" / handle.job_id


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def backend(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = make(tmp_path, workers=2)
    yield b
    b.cancel_all(wait_s=10)
    b.close()


class TestLocalContract(JobBackendContract):
    timeout = 20.0

    def make_backend(self, tmp_path: Path) -> LocalBackend:
        return make(tmp_path)

    @pytest.fixture
    def backend(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        b = self.make_backend(tmp_path)
        yield b
        b.cancel_all(wait_s=10)  # leave no process behind, even when a test failed
        b.close()


# -- options and registration ------------------------------------------------------------------
def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys: gpus, kill_grace_s"):
        make(tmp_path, wrokers=2)
    with pytest.raises(ConfigError, match="list one GPU id per worker slot"):
        make(tmp_path, workers=3, gpus=[0, 1])
    with pytest.raises(ConfigError, match="threads_per_worker must be positive"):
        make(tmp_path, threads_per_worker=0)
    with pytest.raises(ConfigError, match="lists a GPU twice"):
        make(tmp_path, gpus=[1, "1"])
    assert make(tmp_path, gpus=[0, 1]).capacity == 2  # one slot per GPU by default
    assert make(tmp_path).capacity == 1
    assert make(tmp_path, kill_grace_s="2s").opts.kill_grace_s == 2.0


def test_registered_by_entry_point_and_imports_nothing_heavy() -> None:
    assert PluginManager().get("backend", "local") is LocalBackend
    code = (
        "import sys, autolab.backends.local, autolab_core.supervisor\n"
        "heavy = {'torch', 'submitit', 'huggingface_hub', 'trackio', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- slots ---------------------------------------------------------------------------------------
FAKE_NVIDIA_SMI = """#!/bin/sh
# stands in for nvidia-smi on this GPU-less machine; prints what the real one prints for
# --query-gpu=index,uuid,name --format=csv,noheader
echo "0, GPU-0aaa, NVIDIA H100 80GB HBM3"
echo "1, GPU-1bbb, NVIDIA A100-SXM4-40GB"
"""


def test_slot_pinning_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-slot env and hardware; a stub ``nvidia-smi`` (real output format) names the GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    b = make(tmp_path, workers=2, gpus=[0, 1], threads_per_worker=3)
    code = """
        import json, os, time
        keys = ["AUTOLAB_SLOT", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "OMP_WAIT_POLICY", "MINE"]
        print(json.dumps({k: os.environ.get(k) for k in keys}), flush=True)
        time.sleep(0.5)
    """
    try:
        h0 = b.submit(spec(tmp_path, code, "a"))
        h1 = b.submit(spec(tmp_path, code, "b", env={"MINE": "yes", "MKL_NUM_THREADS": "7"}))
        assert (h0.data["slot"], h1.data["slot"]) == ("local-0", "local-1")
        running = wait_for(b, h1, lambda s: s.status is JobStatus.RUNNING, timeout=10)
        assert running.hardware["slot"] == "local-1"
        envs = []
        for h in (h0, h1):
            state = wait_for(b, h, timeout=10)
            assert state.status is JobStatus.SUCCEEDED, state
            assert state.hardware["host"] == socket.gethostname() and state.hardware["cpu"]
            assert state.hardware["slot"] == h.data["slot"] == b.slot_of(h)
            envs.append(json.loads(read_all_logs(b, h).strip()))
        assert [b.poll([h])[h.job_id].hardware["gpu"] for h in (h0, h1)] == [
            "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
        assert envs[0] == {"AUTOLAB_SLOT": "local-0", "CUDA_VISIBLE_DEVICES": "0",
                           "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
                           "OMP_WAIT_POLICY": "PASSIVE", "MINE": None}
        assert envs[1] == {"AUTOLAB_SLOT": "local-1", "CUDA_VISIBLE_DEVICES": "1",
                           "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "7",  # spec.env wins
                           "OMP_WAIT_POLICY": "PASSIVE", "MINE": "yes"}
    finally:
        b.cancel_all(wait_s=10)


def test_more_jobs_than_slots_queue_in_order(backend: LocalBackend, tmp_path: Path) -> None:
    code = """
        import pathlib, sys, time
        t0 = time.time(); time.sleep(0.4)
        pathlib.Path(f"times-{sys.argv[1]}").write_text(f"{t0} {time.time()}")
    """
    handles = []
    for i in range(5):
        s = spec(tmp_path, code, f"q{i}")
        handles.append(backend.submit(JobSpec(s.experiment_id, (*s.command, str(i)), s.workdir)))
    assert [h.data.get("slot") for h in handles] == ["local-0", "local-1", None, None, None]
    states = backend.poll(handles)
    assert [states[h.job_id].status for h in handles[2:]] == [JobStatus.PENDING] * 3
    finals = [wait_for(backend, h, timeout=20) for h in handles]
    assert all(s.status is JobStatus.SUCCEEDED for s in finals), finals
    spans = [tuple(map(float, (tmp_path / "work" / f"times-{i}").read_text().split()))
             for i in range(5)]
    events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
    running, most = 0, 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most == 2  # never more than `workers`, and the two slots were used together
    queued = [s.started_at for s in finals[2:]]
    assert queued == sorted(queued)  # waiting jobs start in submission order
    assert min(queued) >= min(s.finished_at for s in finals[:2])  # type: ignore[type-var]
    again = backend.reattach(handles[4].job_id)
    assert again is not None and again.data["slot"] == finals[4].hardware["slot"]
    assert backend.slot_of(handles[4]) == finals[4].hardware["slot"]


def test_cancel_pending_job_never_runs(tmp_path: Path) -> None:
    b = make(tmp_path, workers=1)
    try:
        first = b.submit(spec(tmp_path, "import time; time.sleep(60)", "long"))
        queued = b.submit(spec(tmp_path, "open('ran', 'w').write('x')", "queued"))
        wait_for(b, first, lambda s: s.status is JobStatus.RUNNING, timeout=10)
        assert b.poll([queued])[queued.job_id].status is JobStatus.PENDING
        b.cancel(queued)
        state = wait_for(b, queued, timeout=10)
        assert state.status is JobStatus.CANCELLED and "waiting for a slot" in state.reason
        assert b.cancel_all(wait_s=10) == [first.job_id]
        assert b.poll([first])[first.job_id].status is JobStatus.CANCELLED
        assert not (tmp_path / "work" / "ran").exists()
    finally:
        b.cancel_all(wait_s=10)


# -- stopping jobs ---------------------------------------------------------------------------------
GRANDCHILD = "import subprocess; subprocess.run(['sh', '-c', 'sleep 300 & echo $! > gc.pid; wait'])"


def test_cancel_kills_grandchildren(backend: LocalBackend, tmp_path: Path) -> None:
    handle = backend.submit(spec(tmp_path, GRANDCHILD))
    pid_file = tmp_path / "work" / "gc.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    sleeper = int(pid_file.read_text())
    assert pid_alive(sleeper)
    backend.cancel(handle)
    state = wait_for(backend, handle, timeout=10)
    assert state.status is JobStatus.CANCELLED and state.reason == "cancelled"
    wait_until(lambda: not pid_alive(sleeper), timeout=2)


def test_time_limit_escalates_to_sigkill(tmp_path: Path) -> None:
    b = make(tmp_path, kill_grace_s=0.3)
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stubborn", flush=True)
        time.sleep(60)
    """
    handle = b.submit(spec(tmp_path, code, time_limit_s=0.5))
    start = time.monotonic()
    state = wait_for(b, handle, timeout=10)
    assert state.status is JobStatus.TIMEOUT and state.reason == "time limit of 0.5s exceeded"
    assert state.exit_code == -signal.SIGKILL
    assert time.monotonic() - start < 5
    assert "stubborn" in read_all_logs(b, handle)


@pytest.mark.parametrize(
    ("sig", "status", "reason"),
    [(signal.SIGKILL, JobStatus.OOM, "killed (SIGKILL), likely out of memory"),
     (signal.SIGSEGV, JobStatus.FAILED, "killed by signal SIGSEGV")],
)
def test_signal_deaths(tmp_path: Path, sig: int, status: JobStatus, reason: str) -> None:
    b = make(tmp_path)
    handle = b.submit(spec(tmp_path, f"import os; os.kill(os.getpid(), {int(sig)})"))
    state = wait_for(b, handle, timeout=10)
    assert (state.status, state.reason, state.exit_code) == (status, reason, -sig)


# -- logs ----------------------------------------------------------------------------------------
def test_logs_return_complete_lines_only(backend: LocalBackend, tmp_path: Path) -> None:
    code = """
        import os, pathlib, sys, time
        sys.stdout.write("ab\\u00e9"); sys.stdout.flush()
        while not pathlib.Path("go").exists():
            time.sleep(0.02)
        sys.stdout.write("c\\nxyz"); sys.stdout.flush()
    """
    handle = backend.submit(spec(tmp_path, code))
    log = job_dir(tmp_path, handle) / "output.log"
    wait_until(lambda: log.exists() and log.stat().st_size == 4)
    assert backend.logs(handle, 0).text == "" and backend.logs(handle, 0).cursor == 0
    (tmp_path / "work" / "go").write_text("")
    assert wait_for(backend, handle, timeout=10).status is JobStatus.SUCCEEDED
    first = backend.logs(handle, 0)
    assert first.text == "abéc\nxyz" and first.cursor == 9  # a finished job's tail too
    assert backend.logs(handle, first.cursor).text == ""
    assert backend.logs(handle, 6).text == "xyz"


# -- crashes and restarts ----------------------------------------------------------------------
def test_dropped_backend_leaves_job_running_for_new_instance(tmp_path: Path) -> None:
    b = make(tmp_path)
    handle = b.submit(spec(tmp_path, "import time; time.sleep(1); print('finished')", "keep"))
    wait_for(b, handle, lambda s: s.status is JobStatus.RUNNING, timeout=10)
    b.close()
    del b
    gc.collect()
    other = make(tmp_path)
    again = other.find("keep")
    assert again is not None and again.job_id == handle.job_id and again.data["slot"] == "local-0"
    assert other.poll([again])[again.job_id].status is JobStatus.RUNNING
    assert wait_for(other, again, timeout=10).status is JobStatus.SUCCEEDED
    assert "finished" in read_all_logs(other, again)


ORCHESTRATOR = """
import json, os, signal, sys
from pathlib import Path
from autolab.backends.local import LocalBackend
from autolab_core.models import JobSpec
from autolab_core.testing import make_context
tmp = Path(sys.argv[1])
b = LocalBackend({"workers": 1}, make_context(tmp))
code = "import sys, time; time.sleep(float(sys.argv[2])); open('runs', 'a').write(sys.argv[1] + chr(10))"
ids = [b.submit(JobSpec(e, (sys.executable, "-c", code, e, d), str(tmp / "work"))).job_id
       for e, d in (("A", "1.0"), ("B", "0"))]
print(json.dumps(ids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_orchestrator_killed_after_submit(tmp_path: Path) -> None:
    """A real orchestrator process submits a running and a pending job and is SIGKILLed."""
    (tmp_path / "work").mkdir()
    proc = subprocess.run([PY, "-c", ORCHESTRATOR, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    a_id, b_id = json.loads(proc.stdout)
    b = make(tmp_path, workers=1)
    try:
        a, queued = b.reattach(a_id), b.find("B")
        assert a is not None and queued is not None and queued.job_id == b_id
        states = b.poll([a, queued])
        assert states[a_id].status in (JobStatus.PENDING, JobStatus.RUNNING)
        assert states[b_id].status is JobStatus.PENDING
        for h in (a, queued):
            assert wait_for(b, h, timeout=15).status is JobStatus.SUCCEEDED
        assert (tmp_path / "work" / "runs").read_text() == "A\nB\n"  # each ran once, in order
        fresh = make(tmp_path)  # no memory at all: final states come from the files
        assert {s.status for s in fresh.poll([a, queued]).values()} == {JobStatus.SUCCEEDED}
    finally:
        b.cancel_all(wait_s=10)


def test_dead_supervisor_is_failed_and_its_job_killed(backend: LocalBackend,
                                                      tmp_path: Path) -> None:
    handle = backend.submit(spec(tmp_path, GRANDCHILD))
    pid_file = tmp_path / "work" / "gc.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    sleeper = int(pid_file.read_text())
    supervisor = json.loads((job_dir(tmp_path, handle) / "supervisor.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    state = wait_for(backend, handle, timeout=10)
    assert state.status is JobStatus.FAILED and "supervisor" in state.reason
    assert state.hardware["slot"] == "local-0"
    wait_until(lambda: not pid_alive(sleeper), timeout=2)
    backend.cancel(handle)  # a no-op now
    assert backend.poll([handle])[handle.job_id] == state
    nxt = backend.submit(spec(tmp_path, "print('slot freed')", "next"))
    assert nxt.data["slot"] == "local-0"
    assert wait_for(backend, nxt, timeout=10).status is JobStatus.SUCCEEDED


def test_unknown_jobs(backend: LocalBackend) -> None:
    ghost = JobHandle("local", "20260101-000000-abcdef-ghost", "ghost")
    assert backend.poll([ghost])[ghost.job_id].status is JobStatus.UNKNOWN
    assert backend.logs(ghost, 5).text == "" and backend.logs(ghost, 5).cursor == 5
    backend.cancel(ghost)
    assert backend.reattach("../../etc") is None and backend.reattach("") is None
    assert backend.find("ghost") is None

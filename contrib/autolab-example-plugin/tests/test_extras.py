"""What the contract does not cover: options, process groups, lost supervisors, notes, discovery.

Real processes and real files throughout; nothing is mocked.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from autolab_example_plugin.backend import SubprocessBackend
from autolab_example_plugin.notes import NotesSource

from autolab_core.errors import BackendError, ConfigError
from autolab_core.models import JobSpec, JobStatus
from autolab_core.plugins import PluginManager
from autolab_core.testing import make_context, read_all_logs, wait_for


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _spec(tmp_path: Path, code: str, **kw: object) -> JobSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return JobSpec(experiment_id="x1", command=(sys.executable, "-c", code), workdir=str(work),
                   **kw)  # type: ignore[arg-type]


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'jobs'.*valid keys: jobs_dir"):
        SubprocessBackend({"jobs": "x"}, make_context(tmp_path))
    with pytest.raises(ConfigError, match=r"kill_grace.*(negative|must be >= 0)"):
        SubprocessBackend({"kill_grace": -1}, make_context(tmp_path))
    backend = SubprocessBackend({"jobs-dir": "my-jobs", "max_parallel": 2}, make_context(tmp_path))
    assert backend.jobs.root == tmp_path / "my-jobs" and backend.capacity == 2


def test_submit_rejects_a_missing_workdir(tmp_path: Path) -> None:
    backend = SubprocessBackend({}, make_context(tmp_path))
    spec = JobSpec(experiment_id="x", command=("true",), workdir=str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="is not a directory"):
        backend.submit(spec)


def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    backend = SubprocessBackend({"kill_grace": 1}, make_context(tmp_path))
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('grandchild', p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    handle = backend.submit(_spec(tmp_path, code))
    deadline = time.monotonic() + 20
    while "grandchild" not in (text := backend.logs(handle, 0).text):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    grandchild = int(text.split()[1])
    assert _pid_alive(grandchild)
    backend.cancel(handle)
    assert wait_for(backend, handle, timeout=20).status is JobStatus.CANCELLED
    deadline = time.monotonic() + 5
    while _pid_alive(grandchild):
        assert time.monotonic() < deadline, "cancel left the job's child process running"
        time.sleep(0.1)


def test_time_limit_escalates_to_sigkill(tmp_path: Path) -> None:
    backend = SubprocessBackend({"kill_grace": 0.5}, make_context(tmp_path))
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    started = time.monotonic()
    handle = backend.submit(_spec(tmp_path, code, time_limit_s=1))
    state = wait_for(backend, handle, timeout=20)
    assert state.status is JobStatus.TIMEOUT, (state, (backend.jobs.jobs_dir / handle.job_id /
                                                       "supervisor.log").read_text())
    assert "time limit" in (state.reason or "")
    assert time.monotonic() - started < 15


def test_a_lost_supervisor_is_reported_not_running_forever(tmp_path: Path) -> None:
    backend = SubprocessBackend({}, make_context(tmp_path))
    handle = backend.submit(_spec(tmp_path, "import time; print('up', flush=True); time.sleep(60)"))
    wait_for(backend, handle, lambda s: s.status is JobStatus.RUNNING, timeout=20)
    job_dir = backend.jobs.jobs_dir / handle.job_id
    supervisor = json.loads((job_dir / "supervisor.json").read_text())["pid"]
    command = json.loads((job_dir / "started.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    state = wait_for(backend, handle, timeout=20)
    assert state.status is JobStatus.FAILED and "supervisor" in (state.reason or "")
    deadline = time.monotonic() + 5
    while _pid_alive(command):  # the orphaned command is stopped with it
        assert time.monotonic() < deadline, "the orphaned command kept running"
        time.sleep(0.1)
    backend.cancel(handle)  # cancelling a finished job is a no-op
    assert backend.poll([handle])[handle.job_id].status is JobStatus.FAILED


def test_find_returns_the_newest_job_of_an_experiment(tmp_path: Path) -> None:
    backend = SubprocessBackend({}, make_context(tmp_path))
    first = backend.submit(_spec(tmp_path, "print('first')"))
    second = backend.submit(_spec(tmp_path, "print('second')"))
    other = SubprocessBackend({}, make_context(tmp_path))
    found = other.find("x1")
    assert found is not None and found.job_id == second.job_id != first.job_id
    assert other.find("nobody") is None
    assert other.reattach("../escape") is None
    for h in (first, second):
        assert wait_for(other, h, timeout=20).status is JobStatus.SUCCEEDED
    assert read_all_logs(other, first) == "first\n"


def test_notes_source(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "warmup.md").write_text("# Longer warmup\nWarmup stabilises Adam early on.\n")
    (notes / "rope.md").write_text("# Rotary embeddings\nRelative positions.\n")
    (notes / "ignored.bin").write_text("warmup")
    source = NotesSource({}, make_context(tmp_path))
    assert source.check() is None
    found = source.search("adam warmup")
    assert [p.id for p in found] == ["warmup"]
    assert found[0].title == "Longer warmup" and "Adam" in found[0].summary
    assert source.get("rope") is not None and source.get("missing") is None
    assert source.search("warmup", since="2999-01-01") == []
    assert "create it" in (NotesSource({"path": "nope"}, make_context(tmp_path)).check() or "")


def test_installed_entry_point_registers_both_classes() -> None:
    """Needs the distribution installed (``pip install -e .``): its entry point is the API."""
    eps = [ep for ep in importlib.metadata.entry_points(group="autolab")
           if ep.dist is not None and ep.dist.name == "autolab-example-plugin"]
    assert eps, "autolab-example-plugin is not installed; run `pip install -e .` first"
    pm = PluginManager(load_entrypoints=False)
    pm.load_entrypoints(eps)
    assert pm.get("backend", "example-subprocess") is SubprocessBackend
    assert pm.get("paper_source", "example-notes") is NotesSource
    info = pm.registry["backend"]["example-subprocess"]
    assert (info.distribution, info.version) == ("autolab-example-plugin", "0.1.0")

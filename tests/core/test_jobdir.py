"""autolab_core.jobdir.JobDirectory with real supervisors: slots or none, and JobState.slot.

(Its full behaviour runs in the contract suites of ``local``, the example plugin and the
documented backend, and in tests/backends/test_local.py.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from autolab_core.errors import BackendError
from autolab_core.jobdir import JobDirectory, Slot
from autolab_core.models import JobSpec, JobStatus
from autolab_core.testing import wait_for

SLEEP = "import os, time; print(os.environ.get('SLOT_MARK', '-'), flush=True); time.sleep(30)"


def spec(tmp_path: Path, code: str, name: str) -> JobSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return JobSpec(name, (sys.executable, "-c", code), str(work))


def test_without_slots_every_job_starts_at_once(tmp_path: Path) -> None:
    jobs = JobDirectory(tmp_path / "state", "plain", kill_grace_s=0.5)
    handles = [jobs.submit(spec(tmp_path, SLEEP, f"e{i}")) for i in range(2)]
    try:
        for h in handles:
            state = wait_for(jobs, h, lambda s: s.status is JobStatus.RUNNING, timeout=30)
            assert state.slot == "plain" and state.hardware.get("slot") == "plain"
    finally:
        assert sorted(jobs.cancel_all(wait_s=20)) == sorted(h.job_id for h in handles)
    assert all(jobs.state(h.job_id).status is JobStatus.CANCELLED for h in handles)


def test_slots_bound_the_jobs_and_are_reported(tmp_path: Path) -> None:
    jobs = JobDirectory(tmp_path / "state", "slotted", slots=[Slot("s-0", {"SLOT_MARK": "zero"})],
                        kill_grace_s=0.5)
    first = jobs.submit(spec(tmp_path, SLEEP, "first"))
    second = jobs.submit(spec(tmp_path, "print('second')", "second"))
    try:
        running = wait_for(jobs, first, lambda s: s.status is JobStatus.RUNNING, timeout=30)
        assert running.slot == "s-0" and first.data == {"slot": "s-0"}
        state = jobs.state(second.job_id)
        assert state.status is JobStatus.PENDING and state.reason == "waiting for a free slot"
        deadline = time.monotonic() + 30
        while jobs.logs(first.job_id).text != "zero\n":  # the slot's environment reached it
            assert time.monotonic() < deadline, jobs.logs(first.job_id)
            time.sleep(0.1)
        jobs.cancel(first.job_id)
        done = wait_for(jobs, second, timeout=30)
        assert done.status is JobStatus.SUCCEEDED and done.slot == "s-0"
    finally:
        jobs.cancel_all(wait_s=20)


def test_submit_refuses_what_cannot_run(tmp_path: Path) -> None:
    jobs = JobDirectory(tmp_path / "state", "plain")
    with pytest.raises(BackendError, match="is not a directory; create it first"):
        jobs.submit(JobSpec("x", ("true",), str(tmp_path / "missing")))
    with pytest.raises(BackendError, match="command is empty"):
        jobs.submit(JobSpec("x", (), str(tmp_path)))

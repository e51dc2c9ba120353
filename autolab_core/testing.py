"""A contract test suite that any ``JobBackend`` can run against itself.

Subclass :class:`JobBackendContract` in a pytest module and provide ``make_backend``::

    from autolab_core.testing import JobBackendContract

    class TestMyBackend(JobBackendContract):
        def make_backend(self, tmp_path):
            return MyBackend({"queue": "debug"}, PluginContext(tmp_path, tmp_path / ".autolab"))

Each test submits small Python commands (``sys.executable`` on the machine that runs the job;
override :meth:`python` if the job runs elsewhere) and waits for them with a deadline, so a
backend that never reaches a terminal state fails instead of hanging.

:class:`InMemoryBackend` is a backend for unit tests of the loop and the gate: nothing runs,
each job moves through PENDING and RUNNING and ends the way a script says, with the output
(``AUTOLAB_METRIC`` and ``AUTOLAB_RESULT`` lines included) that the script gives it.
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import pytest

from autolab_core.interfaces import JobBackend, PluginContext
from autolab_core.job import RunResult, format_signed_result
from autolab_core.metriclines import format_metric_line, format_result_line
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus, LogChunk
from autolab_core.runner import KEY_ENV, NONCE_ENV


class Pollable(Protocol):
    """Anything with a batched ``poll``: a backend, or an ``autolab_core.jobdir.JobDirectory``."""

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]: ...


def wait_for(
    backend: Pollable,
    handle: JobHandle,
    until: Callable[[JobState], bool] = lambda s: s.status.terminal,
    timeout: float = 60.0,
    interval: float = 0.2,
) -> JobState:
    """Poll ``handle`` until ``until(state)``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    state = backend.poll([handle])[handle.job_id]
    while not until(state):
        if time.monotonic() > deadline:
            pytest.fail(f"job {handle.job_id} still {state.status.value} after {timeout}s")
        time.sleep(interval)
        state = backend.poll([handle])[handle.job_id]
    return state


def read_all_logs(backend: JobBackend, handle: JobHandle, settle: float = 10.0) -> str:
    """Every log line of a finished job, waiting up to ``settle`` s for them to arrive."""
    deadline = time.monotonic() + settle
    text, cursor = "", 0
    while True:
        chunk = backend.logs(handle, cursor)
        text, cursor = text + chunk.text, chunk.cursor
        if chunk.text == "" and (text or time.monotonic() > deadline):
            return text
        if time.monotonic() > deadline:
            return text


class JobBackendContract:
    """What every backend must do. Override ``make_backend``; tune the class attributes."""

    #: Seconds to wait for a short job to finish (raise it for a slow queue).
    timeout: float = 60.0
    #: Whether the backend enforces ``JobSpec.time_limit_s``.
    supports_time_limit: bool = True
    #: Whether jobs run in ``JobSpec.workdir`` itself (False for cloud backends that deliver
    #: ``JobSpec.commit`` to a checkout of their own).
    shares_workdir: bool = True

    def make_backend(self, tmp_path: Path) -> JobBackend:
        raise NotImplementedError("override make_backend(tmp_path) to build your backend")

    def python(self) -> str:
        return sys.executable

    def spec(self, tmp_path: Path, code: str, **kw: Any) -> JobSpec:
        workdir = tmp_path / "work"
        workdir.mkdir(exist_ok=True)
        return JobSpec(
            experiment_id=kw.pop("experiment_id", "t" + uuid.uuid4().hex[:8]),
            command=(self.python(), "-c", code),
            workdir=str(workdir),
            **kw,
        )

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Any:
        backend = self.make_backend(tmp_path)
        yield backend
        backend.close()

    # -- the contract ------------------------------------------------------------------------
    def test_name_and_available(self, backend: JobBackend) -> None:
        assert isinstance(backend.name, str) and backend.name
        reason = backend.available()
        assert reason is None or (isinstance(reason, str) and reason)

    def test_success_with_logs_env_and_workdir(self, backend: JobBackend, tmp_path: Path) -> None:
        code = (
            "import os, pathlib; print('hello', os.environ['CONTRACT_VAR']); "
            "pathlib.Path('made-here').write_text('x'); print('cwd-ok')"
        )
        handle = backend.submit(self.spec(tmp_path, code, env={"CONTRACT_VAR": "v42"}))
        assert handle.backend == backend.name and handle.job_id
        state = wait_for(backend, handle, timeout=self.timeout)
        assert state.status is JobStatus.SUCCEEDED, state
        logs = read_all_logs(backend, handle)
        assert "hello v42" in logs and "cwd-ok" in logs
        if self.shares_workdir:
            assert (tmp_path / "work" / "made-here").exists()

    def test_logs_cursor_does_not_repeat(self, backend: JobBackend, tmp_path: Path) -> None:
        code = "import time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.3)"
        handle = backend.submit(self.spec(tmp_path, code))
        wait_for(backend, handle, timeout=self.timeout)
        text = read_all_logs(backend, handle)
        assert [ln for ln in text.splitlines() if ln.startswith("line")] == [
            "line 0", "line 1", "line 2"
        ]
        again = backend.logs(handle, backend.logs(handle, 0).cursor)
        assert "line" not in again.text

    def test_failure_reports_exit_code(self, backend: JobBackend, tmp_path: Path) -> None:
        handle = backend.submit(self.spec(tmp_path, "import sys; print('bye'); sys.exit(3)"))
        state = wait_for(backend, handle, timeout=self.timeout)
        assert state.status is JobStatus.FAILED, state
        assert state.exit_code in (3, None)
        assert state.reason

    def test_cancel(self, backend: JobBackend, tmp_path: Path) -> None:
        handle = backend.submit(self.spec(tmp_path, "import time; print('up', flush=True); time.sleep(120)"))
        wait_for(backend, handle, lambda s: s.status is not JobStatus.PENDING, timeout=self.timeout)
        backend.cancel(handle)
        state = wait_for(backend, handle, timeout=self.timeout)
        assert state.status is JobStatus.CANCELLED, state
        backend.cancel(handle)  # cancelling again is a no-op

    def test_time_limit(self, backend: JobBackend, tmp_path: Path) -> None:
        if not self.supports_time_limit:
            pytest.skip("this backend declares no time-limit support")
        handle = backend.submit(self.spec(tmp_path, "import time; time.sleep(120)", time_limit_s=2))
        state = wait_for(backend, handle, timeout=self.timeout + 120)
        assert state.status is JobStatus.TIMEOUT, state

    def test_poll_is_batched(self, backend: JobBackend, tmp_path: Path) -> None:
        handles = [backend.submit(self.spec(tmp_path, f"print({i})")) for i in range(3)]
        states = backend.poll(handles)
        assert set(states) == {h.job_id for h in handles}
        for h in handles:
            assert wait_for(backend, h, timeout=self.timeout).status is JobStatus.SUCCEEDED

    def test_reattach_from_new_instance(self, backend: JobBackend, tmp_path: Path) -> None:
        handle = backend.submit(
            self.spec(tmp_path, "import time; time.sleep(1); print('done')", experiment_id="reattach1")
        )
        other = self.make_backend(tmp_path)
        try:
            again = other.reattach(handle.job_id)
            assert again is not None and again.job_id == handle.job_id
            assert again.experiment_id == "reattach1"
            state = wait_for(other, again, timeout=self.timeout)
            assert state.status is JobStatus.SUCCEEDED
            assert "done" in read_all_logs(other, again)
            assert other.reattach("no-such-job-" + uuid.uuid4().hex[:6]) is None
        finally:
            other.close()


def make_context(tmp_path: Path, name: str = "lab") -> PluginContext:
    """A :class:`PluginContext` rooted in a temporary directory."""
    state = tmp_path / ".autolab"
    state.mkdir(parents=True, exist_ok=True)
    return PluginContext(lab_root=tmp_path, state_dir=state, lab_name=name)


# -- an in-memory backend for unit tests ---------------------------------------------------------
@attrs.frozen
class ScriptedRun:
    """How one in-memory job behaves.

    It is PENDING for ``polls_pending`` polls, RUNNING for ``polls_running`` polls (None: until
    cancelled or over its time limit), then ends with ``status``. Its log is ``output``, then
    one ``AUTOLAB_METRIC`` line per entry of ``metrics`` (a mapping with ``step`` and values),
    then, with ``result``, the ``AUTOLAB_RESULT`` line as the runner would print it
    (``{"metric": "val_loss", "value": 1.9}``), signed with the job's result key
    (``JobSpec.stdin`` or ``AUTOLAB_RESULT_KEY``; a spec without a key gets the legacy nonce line).
    """

    status: JobStatus = JobStatus.SUCCEEDED
    output: str = ""
    metrics: Sequence[Mapping[str, float]] = ()
    result: Mapping[str, Any] | None = None
    exit_code: int | None = None  # default: 0 when it succeeds, 1 otherwise
    reason: str | None = None
    polls_pending: int = 0
    polls_running: int | None = 1
    cost_usd: float | None = None
    hardware: Mapping[str, str] = attrs.field(factory=dict)

    def log_text(self, spec: JobSpec) -> str:
        lines = [self.output] if self.output else []
        for point in self.metrics:
            values = {k: float(v) for k, v in point.items() if k != "step"}
            lines.append(format_metric_line(int(point.get("step", 0)), values) + "\n")
        if self.result is not None:
            key = (spec.stdin or b"").strip() or spec.env.get(KEY_ENV, "").encode()
            if key:  # signed with the run's key, as the runner does (what the loop accepts)
                result = RunResult.from_dict({"experiment_id": spec.experiment_id, **self.result})
                lines.append(format_signed_result(result, key) + "\n")
            else:  # a spec built by hand, without a key: the legacy nonce line
                payload = {"nonce": spec.env.get(NONCE_ENV, ""), **self.result}
                lines.append(format_result_line(payload) + "\n")
        return "".join(lines)


@attrs.define
class _MemoryJob:
    handle: JobHandle
    spec: JobSpec
    run: ScriptedRun
    polls: int = 0
    started_at: float | None = None
    state: JobState = attrs.field(factory=lambda: JobState(JobStatus.PENDING))


@attrs.define
class MemoryWorld:
    """What an in-memory "cluster" holds; backends built on the same world share jobs."""

    jobs: dict[str, _MemoryJob] = attrs.field(factory=dict)
    submitted: list[JobSpec] = attrs.field(factory=list)
    counter: Any = attrs.field(factory=itertools.count)


_WORLDS: dict[str, MemoryWorld] = {}


class InMemoryBackend(JobBackend):
    """A :class:`JobBackend` whose jobs run nowhere and end as ``script(spec)`` says.

    Backends made with the same ``context.state_dir`` (or the same ``world``) see the same
    jobs, so ``reattach`` from a new instance works as with a real backend. The time limit is
    enforced in real time; ``submitted`` lists every spec, for assertions.
    """

    name = "in-memory"
    description = "jobs that end as a test script says; nothing runs (for unit tests)"

    def __init__(self, options: Mapping[str, Any], context: PluginContext, *,
                 script: Callable[[JobSpec], ScriptedRun] | None = None,
                 world: MemoryWorld | None = None, capacity: int | None = None) -> None:
        super().__init__(options, context)
        self.script = script or (lambda spec: ScriptedRun())
        self.world = world or _WORLDS.setdefault(str(context.state_dir), MemoryWorld())
        self.capacity = capacity

    @property
    def submitted(self) -> list[JobSpec]:
        return self.world.submitted

    def submit(self, spec: JobSpec) -> JobHandle:
        job_id = f"mem-{next(self.world.counter)}-{spec.experiment_id}"
        handle = JobHandle(self.name, job_id, spec.experiment_id, submitted_at=time.time(),
                           data={"slot": self.name})
        self.world.jobs[job_id] = _MemoryJob(handle, spec, self.script(spec))
        self.world.submitted.append(spec)
        return handle

    def _advance(self, job: _MemoryJob) -> JobState:
        if job.state.status.terminal:
            return job.state
        job.polls += 1
        run, now = job.run, time.time()
        if job.polls <= run.polls_pending:
            return job.state
        if job.started_at is None:
            job.started_at = now
        limit = job.spec.time_limit_s
        if limit is not None and now - job.started_at > limit:
            job.state = JobState(JobStatus.TIMEOUT, reason=f"time limit of {limit:g}s exceeded",
                                 started_at=job.started_at, finished_at=now, slot=self.name)
        elif run.polls_running is None or job.polls <= run.polls_pending + run.polls_running:
            job.state = JobState(JobStatus.RUNNING, started_at=job.started_at,
                                 hardware=run.hardware, slot=self.name)
        else:
            ok = run.status is JobStatus.SUCCEEDED
            code = run.exit_code if run.exit_code is not None else (0 if ok else 1)
            reason = run.reason or (None if ok else f"exit code {code}")
            job.state = JobState(run.status, reason=reason, exit_code=code,
                                 started_at=job.started_at, finished_at=now,
                                 hardware=run.hardware, cost_usd=run.cost_usd, slot=self.name)
        return job.state

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        states = {}
        for h in handles:
            job = self.world.jobs.get(h.job_id)
            states[h.job_id] = (JobState(JobStatus.UNKNOWN, reason=f"no job {h.job_id}")
                                if job is None else self._advance(job))
        return states

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        job = self.world.jobs.get(handle.job_id)
        if job is None or job.started_at is None:
            return LogChunk("", since)
        data = job.run.log_text(job.spec).encode()
        return LogChunk(data[since:].decode(errors="replace"), max(since, len(data)))

    def cancel(self, handle: JobHandle) -> None:
        job = self.world.jobs.get(handle.job_id)
        if job is not None and not job.state.status.terminal:
            job.state = JobState(JobStatus.CANCELLED, reason="cancelled",
                                 started_at=job.started_at, finished_at=time.time())

    def reattach(self, job_id: str) -> JobHandle | None:
        job = self.world.jobs.get(job_id)
        return None if job is None else job.handle

    def find(self, experiment_id: str) -> JobHandle | None:
        found = [j.handle for j in self.world.jobs.values() if j.spec.experiment_id == experiment_id]
        return found[-1] if found else None

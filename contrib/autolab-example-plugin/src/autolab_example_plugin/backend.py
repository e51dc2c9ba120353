"""``example-subprocess``: a small but complete :class:`~autolab_core.JobBackend`.

Each job gets a directory ``<jobs_dir>/<job_id>/`` and runs under a detached wrapper process
(:mod:`autolab_example_plugin._wrapper`) that records everything in files there:

=============  ==========================================================================
``job.json``   what to run (written by ``submit``)
``output.log`` the command's stdout and stderr
``child.json`` the command's pid (= its process group) and start time
``cancel``     a marker that ``cancel`` leaves for the wrapper
``exit.json``  exit code and outcome (``exited``, ``timeout``, ``cancelled``, ``error``)
=============  ==========================================================================

Because the state lives in files and not in this object, any instance, in any process, can
``poll``, read ``logs``, ``cancel`` and ``reattach`` a job that another instance submitted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autolab_core.config import parse_options
from autolab_core.errors import BackendError
from autolab_core.interfaces import JobBackend, PluginContext
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus, LogChunk

WRAPPER = Path(__file__).with_name("_wrapper.py")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STARTUP_GRACE_S = 30.0  # how long a job may lack a wrapper pid before it counts as lost


def _non_negative(_inst: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class SubprocessOptions:
    """``[backend.example-subprocess]`` options."""

    #: Where job directories go; relative paths are relative to the lab root.
    #: Default: ``<lab>/.autolab/plugins/example-subprocess/jobs``.
    jobs_dir: str | None = None
    #: Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    kill_grace: float = attrs.field(
        default=5.0, validator=_non_negative, metadata={"duration": True}
    )
    #: How many jobs to run at once (None: the orchestrator's ``--workers``).
    max_parallel: int | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(dict(data)))
    os.replace(tmp, path)


def _alive(pid: int, job_dir: Path) -> bool:
    """Whether ``pid`` is still the wrapper of ``job_dir`` (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return job_dir.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return True  # no /proc here (macOS): trust os.kill


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:40] or "job"


class SubprocessBackend(JobBackend):
    """Runs each job as a local process under a detached wrapper; survives restarts."""

    name = "example-subprocess"
    runs_on_this_machine = True
    queues = False  # each submit starts its process at once
    description = "Local processes under a detached wrapper (the autolab example plugin)."

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.opts = parse_options(SubprocessOptions, options, f"backend.{self.name}")
        if self.opts.jobs_dir is None:
            self.jobs_dir = context.plugin_dir(self.name) / "jobs"
        else:
            self.jobs_dir = context.lab_root / self.opts.jobs_dir
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.capacity = self.opts.max_parallel
        self._wrappers: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def available(cls) -> str | None:
        if os.name != "posix":
            return "example-subprocess needs process groups (Linux or macOS); use `local`"
        return None

    # -- helpers -----------------------------------------------------------------------------
    def _job_dir(self, job_id: str) -> Path | None:
        if not _JOB_ID.match(job_id):
            return None
        path = self.jobs_dir / job_id
        return path if (path / "job.json").is_file() else None

    def _handle(self, job_dir: Path, job: Mapping[str, Any]) -> JobHandle:
        return JobHandle(
            backend=self.name,
            job_id=job["job_id"],
            experiment_id=job["experiment_id"],
            submitted_at=job["submitted_at"],
            data={"job_dir": str(job_dir), "slot": "local"},
        )

    def _reap(self) -> None:
        for job_id, proc in list(self._wrappers.items()):
            if proc.poll() is not None:  # collect the exit status: no zombies
                del self._wrappers[job_id]

    # -- the interface -----------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> JobHandle:
        if not spec.command:
            raise BackendError("JobSpec.command is empty; give the program and its arguments")
        if not Path(spec.workdir).is_dir():
            raise BackendError(f"workdir {spec.workdir!r} is not a directory; create it first")
        job_id = f"{_slug(spec.experiment_id)}-{uuid.uuid4().hex[:8]}"
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir(parents=True)
        job = {
            "job_id": job_id,
            "experiment_id": spec.experiment_id,
            "submitted_at": time.time(),
            "command": list(spec.command),
            "workdir": str(spec.workdir),
            "time_limit_s": spec.time_limit_s,
            "kill_grace": self.opts.kill_grace,
            "env_keys": sorted(spec.env),  # names only: values may be secrets
            "labels": dict(spec.labels),
        }
        _write_json(job_dir / "job.json", job)
        with open(job_dir / "wrapper.log", "ab") as wrapper_log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(WRAPPER), str(job_dir)],
                env={**os.environ, **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=wrapper_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: no terminal signal reaches it
                close_fds=True,
            )
        _write_json(job_dir / "wrapper.json", {"pid": proc.pid})
        self._wrappers[job_id] = proc
        return self._handle(job_dir, job)

    def _state(self, job_id: str) -> JobState:
        job_dir = self._job_dir(job_id)
        if job_dir is None:
            return JobState(JobStatus.UNKNOWN, reason=f"no job {job_id!r} in {self.jobs_dir}")
        job = _read_json(job_dir / "job.json") or {}
        child = _read_json(job_dir / "child.json") or {}
        started = child.get("started_at")
        done = _read_json(job_dir / "exit.json")
        if done is None:
            wrapper = _read_json(job_dir / "wrapper.json")
            if wrapper is None:
                young = time.time() - float(job.get("submitted_at", 0)) < _STARTUP_GRACE_S
                if young:
                    return JobState(JobStatus.PENDING)
            elif _alive(int(wrapper["pid"]), job_dir):
                return JobState(JobStatus.RUNNING if started else JobStatus.PENDING,
                                started_at=started)
            done = _read_json(job_dir / "exit.json")  # it may have finished just now
            if done is None:
                return JobState(
                    JobStatus.FAILED, started_at=started,
                    reason=f"the job's wrapper process is gone without an exit record; "
                    f"see {job_dir / 'wrapper.log'}",
                )
        return self._final_state(job, done, started)

    @staticmethod
    def _final_state(job: Mapping[str, Any], done: Mapping[str, Any], started: Any) -> JobState:
        code, outcome = done.get("exit_code"), done.get("outcome")
        times = {"exit_code": code, "started_at": started, "finished_at": done.get("finished_at")}
        if outcome == "cancelled":
            return JobState(JobStatus.CANCELLED, reason=done.get("reason") or "cancelled", **times)
        if outcome == "timeout":
            limit = job.get("time_limit_s")
            return JobState(JobStatus.TIMEOUT, reason=f"ran past its time limit of {limit}s",
                            **times)
        if outcome == "error":
            return JobState(JobStatus.FAILED, reason=done.get("reason"), **times)
        if code == 0:
            return JobState(JobStatus.SUCCEEDED, **times)
        if isinstance(code, int) and code < 0:
            sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return JobState(JobStatus.FAILED, reason=f"killed by {sig}{hint}", **times)
        return JobState(JobStatus.FAILED, reason=f"exited with code {code}", **times)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        self._reap()
        return {h.job_id: self._state(h.job_id) for h in handles}

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        job_dir = self._job_dir(handle.job_id)
        if job_dir is None:
            return LogChunk("", since)
        finished = (job_dir / "exit.json").exists()  # checked first: then the log is complete
        try:
            with open(job_dir / "output.log", "rb") as fh:
                fh.seek(since)
                data = fh.read()
        except FileNotFoundError:
            return LogChunk("", since)
        if not finished:
            data = data[: data.rfind(b"\n") + 1]  # whole lines only while it runs
        return LogChunk(data.decode("utf-8", errors="replace"), since + len(data))

    def cancel(self, handle: JobHandle) -> None:
        job_dir = self._job_dir(handle.job_id)
        if job_dir is None or (job_dir / "exit.json").exists():
            return
        (job_dir / "cancel").touch()  # the wrapper escalates to SIGKILL after kill_grace
        child = _read_json(job_dir / "child.json")
        if child is not None:
            try:
                os.killpg(int(child["pid"]), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        wrapper = _read_json(job_dir / "wrapper.json")
        if wrapper is not None and not _alive(int(wrapper["pid"]), job_dir):
            if not (job_dir / "exit.json").exists():  # nobody else will record the end
                _write_json(job_dir / "exit.json", {
                    "exit_code": None, "outcome": "cancelled", "finished_at": time.time(),
                    "reason": "cancelled after its wrapper process was lost",
                })

    def reattach(self, job_id: str) -> JobHandle | None:
        job_dir = self._job_dir(job_id)
        job = _read_json(job_dir / "job.json") if job_dir is not None else None
        if job_dir is None or job is None:
            return None
        return self._handle(job_dir, job)

    def find(self, experiment_id: str) -> JobHandle | None:
        """The newest job submitted for ``experiment_id``."""
        best: tuple[float, Path, dict[str, Any]] | None = None
        for job_file in self.jobs_dir.glob("*/job.json"):
            job = _read_json(job_file)
            if job is None or job.get("experiment_id") != experiment_id:
                continue
            if best is None or job["submitted_at"] > best[0]:
                best = (job["submitted_at"], job_file.parent, job)
        return None if best is None else self._handle(best[1], best[2])

    def close(self) -> None:
        """Leave running jobs alone (a new instance can reattach); reap finished wrappers."""
        self._reap()

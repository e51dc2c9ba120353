"""The ``local`` backend: jobs run as processes on this machine, one per worker slot.

Design. Every job has a directory, ``<state>/plugins/local/jobs/<job_id>/``, and a small
detached supervisor process (:mod:`autolab.backends.local_supervisor`, started in its own
session) that owns it. All state lives in that directory's files, so the orchestrator can die
and come back at any time:

* ``spec.json``, ``launch.json`` and then ``handle.json`` are written by ``submit`` before the
  supervisor starts; ``handle.json`` is the commit point that ``reattach`` and ``find`` read.
* ``supervisor.json`` (pid, process start time and boot id, so pid reuse and reboots are
  recognised) is written once by whichever of backend and supervisor gets there first.
* ``started.json`` appears when the job holds a slot and its command started (RUNNING);
  ``exit.json`` is written exactly once (a hard link, so the first writer wins) with the final
  state; ``output.log`` holds the command's stdout and stderr.

Slots ``local-0 .. local-<workers-1>`` are ``flock`` files under ``slots/``, held by the job's
supervisor for the job's whole life and released by the kernel when it exits, however it exits.
``submit`` locks a free slot itself when one is free (so ``handle.data["slot"]`` is known) and
hands the locked descriptor to the supervisor; otherwise the job is PENDING and its supervisor
waits. Waiting jobs are listed in ``queue/`` by submission time and only the oldest live one
tries the locks, so jobs start in submission order and never more than ``workers`` run at once.

Time limits, cancellation (a ``cancel`` file the supervisor polls) and the SIGTERM, grace,
SIGKILL sequence on the job's whole process group all live in the supervisor, so they work with
no orchestrator alive. ``poll`` only reads files (and ``/proc/<pid>/stat`` to check that the
supervisor lives); a supervisor that died without writing ``exit.json`` (killed, out of memory,
machine rebooted) makes the job FAILED, and its orphaned process group is killed.
A job never runs twice: nothing but ``submit`` starts a supervisor, and a supervisor refuses a
job directory that already has ``exit.json``. ``close`` leaves jobs running for the next
orchestrator; ``cancel_all`` stops them.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autolab.backends import local_files as lf
from autolab_core import hookimpl
from autolab_core.config import parse_options
from autolab_core.errors import BackendError, ConfigError
from autolab_core.interfaces import JobBackend, PluginContext
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus, LogChunk

#: At most this many bytes are returned by one ``logs`` call.
MAX_LOG_CHUNK = 4 << 20
#: A line longer than this is returned in pieces rather than held back for its newline.
MAX_LINE = 1 << 20

# Supervisor processes this orchestrator started, reaped as they exit (process-wide, so that
# dropping a backend object neither leaks zombies nor warns about running children).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap_children() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _whole_chars(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that ends on a UTF-8 character boundary."""
    lead = len(data) - 1
    while lead > 0 and data[lead] & 0xC0 == 0x80:  # continuation bytes
        lead -= 1
    first = data[lead] if data else 0
    size = 1 if first < 0xC0 else 2 if first < 0xE0 else 3 if first < 0xF0 else 4
    return len(data) if lead + size <= len(data) else lead


def _positive(_inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _not_negative(_inst: Any, attribute: Any, value: Any) -> None:
    if value is None or value < 0:
        raise ValueError(f"{attribute.name} must be a duration >= 0, got {value!r}")


@attrs.frozen
class LocalOptions:
    """``[backend.local]`` in ``autolab.toml``.

    ``workers`` slots run at once (default 1, or one per entry of ``gpus``); each job gets
    ``threads_per_worker`` BLAS/OpenMP threads and, when ``gpus`` is set, one GPU id of its
    own through ``CUDA_VISIBLE_DEVICES``. ``kill_grace_s`` is the time between SIGTERM and
    SIGKILL when a job is cancelled or over its time limit.
    """

    workers: int | None = attrs.field(default=None, validator=_positive)
    threads_per_worker: int = attrs.field(default=1, validator=_positive)
    gpus: list[int | str] = attrs.field(factory=list)
    kill_grace_s: float = attrs.field(default=5.0, validator=_not_negative,
                                      metadata={"duration": True})


class LocalBackend(JobBackend):
    """Runs jobs as local processes, ``workers`` at a time. See the module docstring."""

    name = "local"
    options_class = LocalOptions
    runs_on_this_machine = True
    queues = True
    description = "run jobs as processes on this machine, one per worker slot"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.opts = parse_options(LocalOptions, options, "backend.local")
        gpus = [str(g) for g in self.opts.gpus]
        if len(set(gpus)) != len(gpus):
            raise ConfigError(f"[backend.local] gpus = {self.opts.gpus!r} lists a GPU twice")
        self.workers = self.opts.workers or max(1, len(gpus))
        if gpus and len(gpus) < self.workers:
            raise ConfigError(
                f"[backend.local] workers = {self.workers} but gpus lists {len(gpus)} GPU(s); "
                "list one GPU id per worker slot, or lower workers"
            )
        self.capacity = self.workers
        self.gpus = gpus
        self.root = context.plugin_dir("local")
        self.jobs_dir = self.root / "jobs"
        self.queue_dir = self.root / "queue"
        self.slots_dir = self.root / "slots"
        for path in (self.jobs_dir, self.queue_dir, self.slots_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._final: dict[str, JobState] = {}
        self._supervisor: dict[str, dict[str, Any]] = {}
        self._started: dict[str, dict[str, Any]] = {}

    # -- slots ---------------------------------------------------------------------------------
    def slot_names(self) -> list[str]:
        return [f"local-{i}" for i in range(self.workers)]

    def slot_env(self, index: int) -> dict[str, str]:
        """The environment that pins a job to slot ``index``."""
        threads = str(self.opts.threads_per_worker)
        env = {
            "AUTOLAB_SLOT": f"local-{index}",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[index]
        return env

    def _launch_info(self, entry: str, workdir: str) -> dict[str, Any]:
        slots = {
            name: {"env": self.slot_env(i), "gpu": self.gpus[i] if self.gpus else None}
            for i, name in enumerate(self.slot_names())
        }
        return {"plugin_dir": str(self.root), "slots": slots, "workdir": os.path.abspath(workdir),
                "kill_grace_s": self.opts.kill_grace_s, "queue_entry": entry}

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> JobHandle:
        _reap_children()
        now, ns = time.time(), time.time_ns()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        job_id = f"{stamp}-{secrets.token_hex(3)}-{lf.safe_name(spec.experiment_id)}"
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir()
        entry = lf.queue_entry(ns, job_id)
        lf.write_json(job_dir / lf.SPEC, attrs.asdict(spec))
        lf.write_json(job_dir / lf.LAUNCH, self._launch_info(entry, spec.workdir))
        (self.queue_dir / entry).touch()
        claimed = None
        if lf.is_head(self.queue_dir, self.jobs_dir, entry):
            claimed = lf.try_claim(self.slots_dir, self.slot_names())
            if claimed:  # not waiting any more: the next job may claim a slot at once
                (self.queue_dir / entry).unlink()
        data = {"slot": claimed[0]} if claimed else {}
        handle = JobHandle(self.name, job_id, spec.experiment_id, submitted_at=now, data=data)
        lf.write_json(job_dir / lf.HANDLE, attrs.asdict(handle))
        argv = [sys.executable, "-m", "autolab.backends.local_supervisor", str(job_dir)]
        if claimed:
            argv += ["--slot", claimed[0], "--slot-fd", str(claimed[1])]
        try:
            with open(job_dir / lf.SUPERVISOR_LOG, "ab") as log:
                proc = subprocess.Popen(
                    argv, cwd=job_dir, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    pass_fds=(claimed[1],) if claimed else (),
                )
        except OSError as exc:
            reason = f"cannot start the job supervisor {argv[:3]}: {exc}"
            lf.write_json_once(job_dir / lf.EXIT, {"status": "failed", "reason": reason,
                                                   "finished_at": time.time()})
            (self.queue_dir / entry).unlink(missing_ok=True)
            raise BackendError(
                f"local backend: {reason}; check that {sys.executable} runs"
            ) from exc
        finally:
            if claimed:
                os.close(claimed[1])
        _CHILDREN[proc.pid] = proc
        lf.write_json_once(job_dir / lf.SUPERVISOR, lf.identity(proc.pid))
        return handle

    # -- reading state -------------------------------------------------------------------------
    def _job_dir(self, job_id: str) -> Path | None:
        if not job_id or "/" in job_id or job_id.startswith("."):
            return None
        path = self.jobs_dir / job_id
        return path if (path / lf.HANDLE).exists() else None

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        _reap_children()
        return {h.job_id: self._state(h.job_id) for h in handles}

    def _state(self, job_id: str) -> JobState:
        if job_id in self._final:
            return self._final[job_id]
        job_dir = self._job_dir(job_id)
        if job_dir is None:
            return JobState(JobStatus.UNKNOWN, reason=f"no local job {job_id} in {self.jobs_dir}")
        final = self._read_exit(job_id, job_dir)
        if final is not None:
            return final
        sup = self._supervisor.get(job_id) or lf.read_json(job_dir / lf.SUPERVISOR)
        started = self._started.get(job_id) or lf.read_json(job_dir / lf.STARTED)
        if started:
            self._started[job_id] = started
        if sup is None:
            handle = lf.read_json(job_dir / lf.HANDLE) or {}
            if time.time() - float(handle.get("submitted_at", 0)) < lf.START_GRACE_S:
                return JobState(JobStatus.PENDING, reason="starting")
            return self._declare_dead(
                job_id, job_dir, f"its supervisor never started; see {job_dir / lf.SUPERVISOR_LOG}"
            )
        self._supervisor[job_id] = sup
        if not lf.is_alive(sup):
            if sup.get("boot_id") and sup["boot_id"] != lf.boot_id():
                why = "the machine restarted before the job ended"
            else:
                why = (f"its supervisor (pid {sup['pid']}) died without recording how the job "
                       f"ended; see {job_dir / lf.SUPERVISOR_LOG}")
            return self._declare_dead(job_id, job_dir, why)
        if started:
            return JobState(JobStatus.RUNNING, started_at=started.get("started_at"),
                            hardware=started.get("hardware", {}))
        handle = lf.read_json(job_dir / lf.HANDLE) or {}
        waiting = "starting" if (handle.get("data") or {}).get("slot") else "waiting for a free slot"
        return JobState(JobStatus.PENDING, reason=waiting)

    def _read_exit(self, job_id: str, job_dir: Path) -> JobState | None:
        record = lf.read_json(job_dir / lf.EXIT)
        if record is None:
            return None
        state = JobState(
            JobStatus(record["status"]), reason=record.get("reason"),
            exit_code=record.get("exit_code"), started_at=record.get("started_at"),
            finished_at=record.get("finished_at"), hardware=record.get("hardware") or {},
        )
        self._final[job_id] = state
        return state

    def _declare_dead(self, job_id: str, job_dir: Path, why: str) -> JobState:
        """Record the end of a job whose supervisor is gone; kill what it left running."""
        final = self._read_exit(job_id, job_dir)  # it may have finished meanwhile
        if final is not None:
            return final
        started = lf.read_json(job_dir / lf.STARTED) or {}
        if started.get("pgid") and lf.group_is_ours(started):
            lf.signal_group(int(started["pgid"]), signal.SIGKILL)
        cancelled = (job_dir / lf.CANCEL).exists()
        record = {
            "status": "cancelled" if cancelled else "failed",
            "reason": f"cancelled; {why}" if cancelled else why,
            "exit_code": None,
            "started_at": started.get("started_at"),
            "finished_at": time.time(),
            "slot": started.get("slot"),
            "hardware": started.get("hardware", {}),
        }
        lf.write_json_once(job_dir / lf.EXIT, record)
        return self._read_exit(job_id, job_dir) or JobState(
            JobStatus(record["status"]), reason=record["reason"], finished_at=record["finished_at"]
        )

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        """Complete lines written after byte offset ``since`` (everything once finished)."""
        job_dir = self._job_dir(handle.job_id)
        if job_dir is None:
            return LogChunk("", since)
        finished = (job_dir / lf.EXIT).exists()  # checked first: a finished log never grows
        try:
            with open(job_dir / lf.LOG, "rb") as f:
                f.seek(since)
                data = f.read(MAX_LOG_CHUNK)
                more = bool(f.read(1))
        except FileNotFoundError:
            return LogChunk("", since)
        if not finished or more:
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) >= MAX_LINE:
                cut = _whole_chars(data)
            data = data[:cut]
        return LogChunk(data.decode("utf-8", errors="replace"), since + len(data))

    # -- stopping ------------------------------------------------------------------------------
    def cancel(self, handle: JobHandle) -> None:
        """Ask the job's supervisor to stop it (SIGTERM, grace, SIGKILL); returns at once."""
        job_dir = self._job_dir(handle.job_id)
        if job_dir is None or (job_dir / lf.EXIT).exists():
            return
        (job_dir / lf.CANCEL).write_text(f"{time.time()}\n")
        sup = lf.read_json(job_dir / lf.SUPERVISOR)
        if sup is None:
            data = lf.read_json(job_dir / lf.HANDLE) or {}
            if time.time() - float(data.get("submitted_at", 0)) < lf.START_GRACE_S:
                return  # the supervisor reads the cancel file as soon as it starts
            self._declare_dead(handle.job_id, job_dir, "its supervisor never started")
        elif not lf.is_alive(sup):
            self._declare_dead(handle.job_id, job_dir, "its supervisor was gone")

    def cancel_all(self, wait_s: float = 0.0) -> list[str]:
        """Cancel every unfinished job in this state directory; wait up to ``wait_s`` for them.

        Returns the ids of the jobs it cancelled.
        """
        unfinished = [d.name for d in sorted(self.jobs_dir.iterdir()) if not (d / lf.EXIT).exists()]
        handles = [h for h in map(self.reattach, unfinished) if h is not None]
        for handle in handles:
            self.cancel(handle)
        deadline = time.monotonic() + wait_s
        while handles and time.monotonic() < deadline:
            if all(s.status.terminal for s in self.poll(handles).values()):
                break
            time.sleep(0.05)
        return [h.job_id for h in handles]

    def close(self) -> None:
        """Leave running jobs alone: a restarted orchestrator takes them over."""
        _reap_children()

    # -- finding jobs again --------------------------------------------------------------------
    def reattach(self, job_id: str) -> JobHandle | None:
        job_dir = self._job_dir(job_id)
        data = None if job_dir is None else lf.read_json(job_dir / lf.HANDLE)
        if job_dir is None or data is None:
            return None
        handle = JobHandle.from_dict(data)
        if "slot" not in handle.data:
            started = lf.read_json(job_dir / lf.STARTED)
            if started and started.get("slot"):
                handle = attrs.evolve(handle, data={**handle.data, "slot": started["slot"]})
        return handle

    def find(self, experiment_id: str) -> JobHandle | None:
        """The newest job submitted for ``experiment_id``."""
        wanted = lf.safe_name(experiment_id)
        best: JobHandle | None = None
        for job_dir in self.jobs_dir.iterdir():
            parts = job_dir.name.split("-", 3)
            if len(parts) != 4 or parts[3] != wanted:
                continue
            handle = self.reattach(job_dir.name)
            if handle is not None and handle.experiment_id == experiment_id and (
                best is None or handle.submitted_at > best.submitted_at
            ):
                best = handle
        return best

    def slot_of(self, handle: JobHandle) -> str:
        if handle.data.get("slot"):
            return str(handle.data["slot"])
        again = self.reattach(handle.job_id)
        return str(again.data.get("slot", self.name)) if again is not None else self.name


@hookimpl
def autolab_register_backends(register: Any) -> None:
    register(LocalBackend)

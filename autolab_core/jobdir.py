"""Jobs as directories run by detached supervisors: the engine of ``local`` and of plugins.

Every job has a directory ``<root>/jobs/<job_id>/`` and a small detached supervisor process
(:mod:`autolab_core.supervisor`, started in its own session, standard library only) that owns
it. All state lives in that directory's files, so the orchestrator can die and come back:

* ``spec.json``, ``launch.json`` and then ``handle.json`` are written by ``submit`` before the
  supervisor starts; ``handle.json`` is the commit point that ``reattach`` and ``find`` read.
* ``supervisor.json`` (pid, process start time and boot id, so pid reuse and reboots are
  recognised) is written once by whichever of backend and supervisor gets there first.
* ``started.json`` appears when the job holds a slot and its command started (RUNNING);
  ``exit.json`` is written exactly once (a hard link, so the first writer wins) with the final
  state; ``output.log`` holds the command's stdout and stderr.

With ``slots``, at most one job runs per slot: slots are ``flock`` files under ``slots/``, held
by the job's supervisor for the job's whole life and released by the kernel when it exits.
``submit`` locks a free slot itself when one is free (so ``handle.data["slot"]`` is known) and
hands the locked descriptor to the supervisor; otherwise the job is PENDING and its supervisor
waits. Waiting jobs are listed in ``queue/`` by submission time and only the oldest live one
tries the locks, so jobs start in submission order. Without slots every job starts at once.

Time limits, cancellation (a ``cancel`` file the supervisor polls) and the SIGTERM, grace,
SIGKILL sequence on the job's whole process group live in the supervisor, so they work with no
orchestrator alive. ``state`` only reads files (and ``/proc/<pid>/stat``); a supervisor that
died without writing ``exit.json`` makes the job FAILED and its orphaned group is killed. A job
never runs twice: only ``submit`` starts a supervisor, and a supervisor refuses a directory
that already has ``exit.json``.
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

from autolab_core import jobfiles as jf
from autolab_core import procs
from autolab_core.atomic import read_json, write_json, write_json_once
from autolab_core.errors import BackendError
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus, LogChunk, not_secret

#: At most this many bytes are returned by one ``logs`` call.
MAX_LOG_CHUNK = 4 << 20
#: A line longer than this is returned in pieces rather than held back for its newline.
MAX_LINE = 1 << 20
_CORE_PARENT = str(Path(__file__).resolve().parent.parent)
_SUPERVISOR_MAIN = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                    "from autolab_core.supervisor import main; sys.exit(main())")

# Supervisor processes this process started, reaped as they exit (process-wide, so that
# dropping a backend object neither leaks zombies nor warns about running children).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def reap_children() -> None:
    """Collect the exit status of finished supervisors started by this process."""
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


@attrs.frozen
class Slot:
    """A place one job runs at a time: its name, extra environment, and GPU id if pinned."""

    name: str
    env: Mapping[str, str] = attrs.field(factory=dict)
    gpu: str | None = None


class JobDirectory:
    """Submit, follow, cancel and find jobs kept under ``root``. See the module docstring.

    ``backend`` names the backend in handles; ``slots`` (optional) bounds how many jobs run
    at once; ``kill_grace_s`` is the time between SIGTERM and SIGKILL.
    """

    def __init__(self, root: Path, backend: str, *, slots: Sequence[Slot] = (),
                 kill_grace_s: float = 5.0) -> None:
        self.root, self.backend = Path(root), backend
        self.slots = list(slots)
        self.kill_grace_s = kill_grace_s
        self.jobs_dir, self.queue_dir = self.root / "jobs", self.root / "queue"
        self.slots_dir = self.root / "slots"
        for path in (self.jobs_dir, self.queue_dir, self.slots_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._final: dict[str, JobState] = {}
        self._supervisor: dict[str, dict[str, Any]] = {}
        self._started: dict[str, dict[str, Any]] = {}

    # -- submitting ----------------------------------------------------------------------------
    def _launch_info(self, entry: str | None, workdir: str) -> dict[str, Any]:
        slots = {s.name: {"env": dict(s.env), "gpu": s.gpu} for s in self.slots}
        return {"root": str(self.root), "slots": slots, "default_slot": self.backend,
                "workdir": os.path.abspath(workdir), "kill_grace_s": self.kill_grace_s,
                "queue_entry": entry}

    def _claim(self, entry: str) -> tuple[str, int] | None:
        (self.queue_dir / entry).touch()
        if not jf.is_head(self.queue_dir, self.jobs_dir, entry):
            return None
        claimed = jf.try_claim(self.slots_dir, [s.name for s in self.slots])
        if claimed:  # not waiting any more: the next job may claim a slot at once
            (self.queue_dir / entry).unlink()
        return claimed

    def submit(self, spec: JobSpec) -> JobHandle:
        """Write the job's directory and start its supervisor; returns at once."""
        if not spec.command:
            raise BackendError(f"{self.backend}: JobSpec.command is empty; give the program "
                               "and its arguments")
        if not Path(spec.workdir).is_dir():
            raise BackendError(f"{self.backend}: workdir {spec.workdir!r} is not a directory; "
                               "create it first")
        reap_children()
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        job_id = f"{stamp}-{secrets.token_hex(3)}-{jf.safe_name(spec.experiment_id)}"
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir()
        entry = jf.queue_entry(time.time_ns(), job_id) if self.slots else None
        write_json(job_dir / jf.SPEC, attrs.asdict(spec, filter=not_secret), fsync=False)
        write_json(job_dir / jf.LAUNCH, self._launch_info(entry, spec.workdir), fsync=False)
        claimed = self._claim(entry) if entry else None
        data = {"slot": claimed[0]} if claimed else {} if self.slots else {"slot": self.backend}
        handle = JobHandle(self.backend, job_id, spec.experiment_id, submitted_at=now, data=data)
        write_json(job_dir / jf.HANDLE, attrs.asdict(handle))
        argv = [sys.executable, "-c", _SUPERVISOR_MAIN, _CORE_PARENT, str(job_dir)]
        if claimed:
            argv += ["--slot", claimed[0], "--slot-fd", str(claimed[1])]
        try:
            with open(job_dir / jf.SUPERVISOR_LOG, "ab") as log:
                proc = subprocess.Popen(
                    argv, cwd=job_dir, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL if spec.stdin is None else subprocess.PIPE,
                    start_new_session=True, pass_fds=(claimed[1],) if claimed else (),
                )
            if proc.stdin is not None:  # the command's stdin (a key): a pipe, never a file
                assert spec.stdin is not None
                proc.stdin.write(spec.stdin)
                proc.stdin.close()
        except OSError as exc:
            reason = f"cannot start the job supervisor with {sys.executable}: {exc}"
            write_json_once(job_dir / jf.EXIT, {"status": "failed", "reason": reason,
                                                "finished_at": time.time()})
            if entry:
                (self.queue_dir / entry).unlink(missing_ok=True)
            raise BackendError(f"{self.backend}: {reason}; check that it runs") from exc
        finally:
            if claimed:
                os.close(claimed[1])
        _CHILDREN[proc.pid] = proc
        write_json_once(job_dir / jf.SUPERVISOR, procs.identity(proc.pid))
        return handle

    # -- reading state -------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path | None:
        """The directory of a submitted job, or None (also for ids that are not names)."""
        if not job_id or "/" in job_id or job_id.startswith("."):
            return None
        path = self.jobs_dir / job_id
        return path if (path / jf.HANDLE).exists() else None

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        reap_children()
        return {h.job_id: self.state(h.job_id) for h in handles}

    def state(self, job_id: str) -> JobState:
        """The job's state from its files; a job whose supervisor is gone becomes FAILED."""
        if job_id in self._final:
            return self._final[job_id]
        job_dir = self.job_dir(job_id)
        if job_dir is None:
            return JobState(JobStatus.UNKNOWN, reason=f"no job {job_id} in {self.jobs_dir}")
        final = self._read_exit(job_id, job_dir)
        if final is not None:
            return final
        sup = self._supervisor.get(job_id) or read_json(job_dir / jf.SUPERVISOR)
        started = self._started.get(job_id) or read_json(job_dir / jf.STARTED)
        if started:
            self._started[job_id] = started
        if sup is None:
            if self._young(job_dir):
                return JobState(JobStatus.PENDING, reason="starting")
            return self._declare_dead(
                job_id, job_dir, f"its supervisor never started; see {job_dir / jf.SUPERVISOR_LOG}")
        self._supervisor[job_id] = sup
        if not procs.is_alive(sup):
            if sup.get("boot_id") and sup["boot_id"] != procs.boot_id():
                why = "the machine restarted before the job ended"
            else:
                why = (f"its supervisor (pid {sup['pid']}) died without recording how the job "
                       f"ended; see {job_dir / jf.SUPERVISOR_LOG}")
            return self._declare_dead(job_id, job_dir, why)
        if started:
            return JobState(JobStatus.RUNNING, started_at=started.get("started_at"),
                            hardware=started.get("hardware", {}), slot=started.get("slot"))
        handle = read_json(job_dir / jf.HANDLE) or {}
        slot = (handle.get("data") or {}).get("slot")
        return JobState(JobStatus.PENDING, reason="starting" if slot else "waiting for a free slot")

    @staticmethod
    def _young(job_dir: Path) -> bool:
        handle = read_json(job_dir / jf.HANDLE) or {}
        return time.time() - float(handle.get("submitted_at", 0)) < jf.START_GRACE_S

    def _read_exit(self, job_id: str, job_dir: Path) -> JobState | None:
        record = read_json(job_dir / jf.EXIT)
        if record is None:
            return None
        state = JobState(
            JobStatus(record["status"]), reason=record.get("reason"),
            exit_code=record.get("exit_code"), started_at=record.get("started_at"),
            finished_at=record.get("finished_at"), hardware=record.get("hardware") or {},
            slot=record.get("slot"),
        )
        self._final[job_id] = state
        return state

    def _declare_dead(self, job_id: str, job_dir: Path, why: str) -> JobState:
        """Record the end of a job whose supervisor is gone; kill what it left running."""
        final = self._read_exit(job_id, job_dir)  # it may have finished meanwhile
        if final is not None:
            return final
        started = read_json(job_dir / jf.STARTED) or {}
        if started.get("pgid") and procs.group_is_ours(started):
            procs.signal_group(int(started["pgid"]), signal.SIGKILL)
        cancelled = (job_dir / jf.CANCEL).exists()
        record = {
            "status": "cancelled" if cancelled else "failed",
            "reason": f"cancelled; {why}" if cancelled else why,
            "exit_code": None, "started_at": started.get("started_at"),
            "finished_at": time.time(), "slot": started.get("slot"),
            "hardware": started.get("hardware", {}),
        }
        write_json_once(job_dir / jf.EXIT, record)
        return self._read_exit(job_id, job_dir) or JobState(
            JobStatus(record["status"]), reason=record["reason"], finished_at=record["finished_at"])

    def logs(self, job_id: str, since: int = 0) -> LogChunk:
        """Complete lines written after byte offset ``since`` (everything once finished)."""
        job_dir = self.job_dir(job_id)
        if job_dir is None:
            return LogChunk("", since)
        finished = (job_dir / jf.EXIT).exists()  # checked first: a finished log never grows
        try:
            with open(job_dir / jf.LOG, "rb") as f:
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
    def cancel(self, job_id: str) -> None:
        """Ask the job's supervisor to stop it (SIGTERM, grace, SIGKILL); returns at once."""
        job_dir = self.job_dir(job_id)
        if job_dir is None or (job_dir / jf.EXIT).exists():
            return
        (job_dir / jf.CANCEL).write_text(f"{time.time()}\n")
        sup = read_json(job_dir / jf.SUPERVISOR)
        if sup is None:
            if self._young(job_dir):
                return  # the supervisor reads the cancel file as soon as it starts
            self._declare_dead(job_id, job_dir, "its supervisor never started")
        elif not procs.is_alive(sup):
            self._declare_dead(job_id, job_dir, "its supervisor was gone")

    def cancel_all(self, wait_s: float = 0.0) -> list[str]:
        """Cancel every unfinished job; wait up to ``wait_s`` for them. Returns their ids."""
        unfinished = [d.name for d in sorted(self.jobs_dir.iterdir()) if not (d / jf.EXIT).exists()]
        handles = [h for h in map(self.reattach, unfinished) if h is not None]
        for handle in handles:
            self.cancel(handle.job_id)
        deadline = time.monotonic() + wait_s
        while handles and time.monotonic() < deadline:
            if all(s.status.terminal for s in self.poll(handles).values()):
                break
            time.sleep(0.05)
        return [h.job_id for h in handles]

    # -- finding jobs again --------------------------------------------------------------------
    def reattach(self, job_id: str) -> JobHandle | None:
        """The handle of a job submitted earlier, by any process, or None."""
        job_dir = self.job_dir(job_id)
        data = None if job_dir is None else read_json(job_dir / jf.HANDLE)
        if job_dir is None or data is None:
            return None
        handle = JobHandle.from_dict(data)
        if "slot" not in handle.data:
            started = read_json(job_dir / jf.STARTED)
            if started and started.get("slot"):
                handle = attrs.evolve(handle, data={**handle.data, "slot": started["slot"]})
        return handle

    def find(self, experiment_id: str) -> JobHandle | None:
        """The newest job submitted for ``experiment_id``."""
        wanted = jf.safe_name(experiment_id)
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
        """The slot the job holds or held (the backend's name before it got one)."""
        if handle.data.get("slot"):
            return str(handle.data["slot"])
        again = self.reattach(handle.job_id)
        return str(again.data.get("slot", self.backend)) if again is not None else self.backend

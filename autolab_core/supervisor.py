"""The per-job supervisor of a job directory: ``python -m autolab_core.supervisor JOB_DIR``.

One supervisor runs per job, detached from the orchestrator (its own session), so a job keeps
its time limit and records how it ended even when no orchestrator is alive. In order it:

1. records itself in ``supervisor.json`` (pid, process start time, boot id);
2. waits for a slot unless the backend handed it a locked one (``--slot NAME --slot-fd N``)
   or declared no slots: only the oldest waiting job tries to lock a slot file, so jobs start
   in submission order;
3. writes ``started.json`` and runs the command in its own session, output to ``output.log``;
4. stops the whole process group (SIGTERM, then SIGKILL after the grace period) on the time
   limit, on a ``cancel`` file, or when it is itself told to stop;
5. stops whatever the job left behind, writes ``exit.json`` once, and exits, which releases the
   slot lock.

It is a child subreaper (Linux), so orphaned grandchildren are adopted, reaped and killed too.
Standard library only: it runs wherever ``autolab_core`` is, without attrs or pluggy.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from autolab_core import jobfiles as jf
from autolab_core import procs
from autolab_core.atomic import read_json, write_json, write_json_once

TICK_S = 0.1
_stop_signal: int | None = None


def _on_signal(signum: int, _frame: Any) -> None:
    global _stop_signal
    _stop_signal = signum


def _become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _reap_orphans(main_pid: int | None) -> None:
    """Reap exited adopted processes, leaving the main child to ``Popen``."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == main_pid:
            return
        try:
            os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            return


def _read_stdin() -> bytes:
    """The bytes the submitter piped in (empty for /dev/null); the supervisor then stops being
    dumpable, so a same-user job cannot read them from ``/proc/<supervisor>/mem``."""
    try:
        data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    except OSError:
        data = b""
    if data:
        from autolab_core.sandbox import prctl

        prctl(4, 0)  # PR_SET_DUMPABLE
    return data


class Supervisor:
    """Runs one job directory's command to its end. See the module docstring."""

    def __init__(self, job_dir: Path) -> None:
        self.dir = job_dir
        self.spec: dict[str, Any] = read_json(job_dir / jf.SPEC) or {}
        self.launch: dict[str, Any] = read_json(job_dir / jf.LAUNCH) or {}
        root = self.launch.get("root") or self.launch.get("plugin_dir")
        self.root = Path(root) if root else job_dir.parent.parent
        self.grace = float(self.launch.get("kill_grace_s", 5.0))
        self.proc: subprocess.Popen[bytes] | None = None
        self.slot: str | None = None
        self.started: dict[str, Any] = {}
        self.why_stopped: str | None = None  # "cancel", "timeout" or "signal"
        #: What the submitter piped in for the command's stdin (the run's result key); read
        #: before anything else and kept in memory only.
        self.stdin = b""

    # -- helpers ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def stop_requested(self) -> str | None:
        if (self.dir / jf.CANCEL).exists():
            return "cancel"
        if _stop_signal is not None:
            return "signal"
        return None

    def finish(self, status: str, reason: str | None, exit_code: int | None = None) -> None:
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        record = {
            "status": status,
            "reason": reason,
            "exit_code": exit_code,
            "started_at": self.started.get("started_at"),
            "finished_at": time.time(),
            "slot": self.slot,
            "hardware": self.started.get("hardware", {}),
            "max_rss_mb": round(rss / 1024, 1) if self.proc is not None else None,
        }
        if not write_json_once(self.dir / jf.EXIT, record):
            self.log("exit.json already written by someone else; keeping it")
        self.log(f"finished: {status} ({reason})")

    def drop_queue_entry(self) -> None:
        if self.launch.get("queue_entry"):
            (self.root / "queue" / self.launch["queue_entry"]).unlink(missing_ok=True)

    # -- waiting for a slot ----------------------------------------------------------------
    def wait_for_slot(self) -> int | None:
        """Block until this job holds a slot; None when it was stopped while waiting."""
        queue_dir, jobs_dir = self.root / "queue", self.root / "jobs"
        slots = list(self.launch["slots"])
        while True:
            if self.stop_requested():
                return None
            if jf.is_head(queue_dir, jobs_dir, self.launch["queue_entry"]):
                claimed = jf.try_claim(self.root / "slots", slots)
                if claimed is not None:
                    self.slot, fd = claimed
                    return fd
            time.sleep(TICK_S)

    # -- running -------------------------------------------------------------------------------
    def start(self, inventory: list[dict[str, str]]) -> bool:
        """Start the command; False (with exit.json written) when it cannot start."""
        assert self.slot is not None
        slot_info = (self.launch.get("slots") or {}).get(self.slot) or {"env": {}, "gpu": None}
        env = dict(os.environ)
        env.update(slot_info["env"])
        env.update({str(k): str(v) for k, v in (self.spec.get("env") or {}).items()})
        command = [str(c) for c in self.spec["command"]]
        workdir = self.launch["workdir"]
        self.log(f"slot {self.slot}: running {command} in {workdir}")
        with open(self.dir / jf.LOG, "ab") as out:
            try:
                self.proc = subprocess.Popen(
                    command, cwd=workdir, env=env,
                    stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
                if self.proc.stdin is not None:
                    self.proc.stdin.write(self.stdin)
                    self.proc.stdin.close()
                self.stdin = b""
            except OSError as exc:
                out.write(f"autolab: cannot start {command[0]!r}: {exc}\n".encode())
                self.finish("failed", f"cannot start the command: {exc}")
                return False
        ident = procs.identity(self.proc.pid)
        self.started.update(pid=self.proc.pid, pgid=self.proc.pid, start=ident["start"],
                            boot_id=ident["boot_id"])
        self.started["hardware"] = procs.hardware(self.slot, slot_info.get("gpu"), inventory)
        write_json(self.dir / jf.STARTED, self.started)
        return True

    def alive(self) -> bool:
        """Whether the job's group or any adopted process still lives (reaping as we go)."""
        assert self.proc is not None
        self.proc.poll()
        _reap_orphans(self.proc.pid if self.proc.returncode is None else None)
        return procs.signal_group(self.proc.pid, 0) or bool(procs.children_of(os.getpid()))

    def kill_all(self, sig: int) -> None:
        assert self.proc is not None
        procs.signal_group(self.proc.pid, sig)
        for pid in procs.children_of(os.getpid()):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def terminate(self) -> None:
        """SIGTERM to everything the job started; SIGKILL to what is left after the grace."""
        if not self.alive():
            return
        self.kill_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if not self.alive():
                return
            time.sleep(0.05)
        self.log(f"still running {self.grace:g}s after SIGTERM: SIGKILL")
        for _ in range(20):
            self.kill_all(signal.SIGKILL)
            if not self.alive():
                return
            time.sleep(0.05)

    def supervise(self) -> None:
        """Wait for the command, enforcing the time limit and stop requests."""
        assert self.proc is not None
        limit = self.spec.get("time_limit_s")
        deadline = None if limit is None else time.monotonic() + float(limit)
        while True:
            try:
                self.proc.wait(timeout=TICK_S)
                break
            except subprocess.TimeoutExpired:
                pass
            _reap_orphans(self.proc.pid)
            why = self.stop_requested()
            if why is None and deadline is not None and time.monotonic() > deadline:
                why = "timeout"
            if why is not None:
                self.why_stopped = why
                self.log(f"stopping the job ({why})")
                self.terminate()
                break
        self.proc.wait()
        self.terminate()  # whatever the job left running in its group or adopted
        self.record_end(limit)

    def record_end(self, limit: float | None) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        if self.why_stopped == "cancel":
            self.finish("cancelled", "cancelled", code)
        elif self.why_stopped == "timeout":
            self.finish("timeout", f"time limit of {float(limit or 0):g}s exceeded", code)
        elif self.why_stopped == "signal":
            name = procs.signal_name(_stop_signal or 0)
            self.finish("preempted", f"the job's supervisor received {name}", code)
        elif code == 0:
            self.finish("succeeded", None, 0)
        elif code > 0:
            self.finish("failed", f"exit code {code}", code)
        elif -code == signal.SIGKILL:
            self.finish("oom", "killed (SIGKILL), likely out of memory", code)
        else:
            self.finish("failed", f"killed by signal {procs.signal_name(-code)}", code)

    def run(self, slot: str | None, slot_fd: int | None) -> None:
        write_json_once(self.dir / jf.SUPERVISOR, procs.identity(os.getpid()))
        if (self.dir / jf.EXIT).exists():
            self.log("exit.json exists already: this job is over, not running it again")
            return
        inventory = procs.gpu_inventory()
        if not self.launch.get("slots"):  # no slots: every job starts at once
            self.slot = self.launch.get("default_slot") or "local"
        elif slot_fd is None:
            slot_fd = self.wait_for_slot()
            if slot_fd is None:
                why = self.stop_requested()
                status = "cancelled" if why == "cancel" else "preempted"
                self.drop_queue_entry()
                self.finish(status, f"{status} while waiting for a slot")
                return
        else:
            self.slot = slot
        self.started["slot"] = self.slot
        self.started["started_at"] = time.time()
        self.drop_queue_entry()  # after started_at: the next job starts strictly later
        if self.stop_requested():
            self.finish("cancelled" if self.stop_requested() == "cancel" else "preempted",
                        "stopped before it started")
            return
        if self.start(inventory):
            self.supervise()
        # slot_fd stays open until this process exits, which releases the slot lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="supervise one autolab job directory")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--slot")
    parser.add_argument("--slot-fd", type=int)
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    _become_subreaper()
    sup = Supervisor(args.job_dir)
    sup.stdin = _read_stdin()
    try:
        sup.run(args.slot, args.slot_fd)
    except BaseException as exc:
        traceback.print_exc()
        if sup.proc is not None:
            sup.kill_all(signal.SIGKILL)
        sup.finish("failed", f"the job's supervisor crashed: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

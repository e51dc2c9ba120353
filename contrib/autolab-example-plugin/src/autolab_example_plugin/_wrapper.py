"""The detached wrapper that runs one job: ``python -I -S _wrapper.py <job_dir>``.

It is started in its own session by :class:`~autolab_example_plugin.backend.SubprocessBackend`
and outlives the process that started it. It runs the job's command in a new process group
with its output appended to ``output.log``, enforces the time limit, honours a ``cancel``
marker file (or SIGTERM), and finally writes ``exit.json``. Every file it writes is written
atomically, so a backend instance in another process can read the job's state at any time.

Standard library only: it runs with ``-I -S`` and must not import the package it lives in.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL_S = 0.1


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (readers see the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(job_dir: Path) -> int:
    """Run the job described by ``job_dir/job.json``; return the wrapper's own exit status."""
    job = json.loads((job_dir / "job.json").read_text())
    stop: list[str] = []  # "cancelled" once a SIGTERM arrives
    signal.signal(signal.SIGTERM, lambda *_: stop.append("cancelled"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def finish(exit_code: int | None, outcome: str, reason: str | None = None) -> int:
        write_json(
            job_dir / "exit.json",
            {"exit_code": exit_code, "outcome": outcome, "reason": reason,
             "finished_at": time.time()},
        )
        return 0

    if (job_dir / "cancel").exists():
        return finish(None, "cancelled", "cancelled before it started")
    with open(job_dir / "output.log", "ab", buffering=0) as log:
        try:
            child = subprocess.Popen(
                job["command"],
                cwd=job["workdir"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills all of it
            )
        except OSError as exc:
            reason = f"cannot start {job['command'][0]!r} in {job['workdir']!r}: {exc}"
            log.write(f"autolab-example-plugin: {reason}\n".encode())
            return finish(None, "error", reason)
    write_json(job_dir / "child.json", {"pid": child.pid, "started_at": time.time()})

    limit = job.get("time_limit_s")
    deadline = time.monotonic() + limit if limit else math.inf
    grace = float(job.get("kill_grace", 5.0))
    outcome: str | None = None
    kill_at = math.inf
    while True:
        try:
            exit_code = child.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if outcome is None:
            if stop or (job_dir / "cancel").exists():
                outcome = "cancelled"
            elif now >= deadline:
                outcome = "timeout"
            if outcome is not None:
                _signal_group(child.pid, signal.SIGTERM)
                kill_at = now + grace
        elif now >= kill_at:
            _signal_group(child.pid, signal.SIGKILL)
            kill_at = math.inf
    if outcome is None and (stop or (job_dir / "cancel").exists()):
        outcome = "cancelled"  # `cancel` signalled the group itself before we noticed
    # Whatever the job left running in its process group goes with it.
    _signal_group(child.pid, signal.SIGKILL)
    return finish(exit_code, outcome or "exited")


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))

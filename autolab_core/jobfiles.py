"""The files of one job directory, worker slots and the pending queue.

Standard library only: the job supervisor (:mod:`autolab_core.supervisor`) imports it. See
:mod:`autolab_core.jobdir` for the design.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

from autolab_core.atomic import read_json
from autolab_core.procs import is_alive

# -- the files of one job directory --------------------------------------------------------
SPEC = "spec.json"  # the JobSpec, as submitted
LAUNCH = "launch.json"  # how to run it: per-slot environments, kill grace, queue entry
HANDLE = "handle.json"  # the JobHandle; its presence means "this job was submitted"
SUPERVISOR = "supervisor.json"  # who supervises it: pid, process start time, boot id
STARTED = "started.json"  # written once the job holds a slot and its command started
EXIT = "exit.json"  # the final state, written exactly once (first writer wins)
CANCEL = "cancel"  # a cancellation request; the supervisor polls for it
LOG = "output.log"  # the command's stdout and stderr
SUPERVISOR_LOG = "supervisor.log"  # the supervisor's own output (its errors, if any)

#: A job whose supervisor has not recorded itself this long after submission has none.
START_GRACE_S = 30.0


def safe_name(text: str, limit: int = 64) -> str:
    """``text`` reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", text)[:limit] or "_"


# -- slots -------------------------------------------------------------------------------------
def try_claim(slots_dir: Path, names: list[str]) -> tuple[str, int] | None:
    """Lock the first free slot of ``names``; return its name and the locked file descriptor.

    The lock (``flock``) lives as long as an open descriptor of it does, in whichever process
    holds one, and vanishes with the process: a crashed job never leaks its slot.
    """
    slots_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        fd = os.open(slots_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return name, fd
    return None


# -- the pending queue -------------------------------------------------------------------------
def queue_entry(submitted_ns: int, job_id: str) -> str:
    """The queue file name of a job: sorts by submission time."""
    return f"{submitted_ns:020d}_{job_id}"


def _waiting(jobs_dir: Path, entry: str) -> bool:
    """Whether the job of queue ``entry`` may still claim a slot."""
    job_dir = jobs_dir / entry.split("_", 1)[1]
    if (job_dir / EXIT).exists():
        return False
    sup = read_json(job_dir / SUPERVISOR)
    if sup is None:  # being submitted, or its submitter died before starting a supervisor
        return time.time() - int(entry.split("_", 1)[0]) / 1e9 < START_GRACE_S
    return is_alive(sup)


def is_head(queue_dir: Path, jobs_dir: Path, entry: str) -> bool:
    """Whether ``entry`` is the oldest job still waiting; removes entries of dead jobs."""
    try:
        entries = sorted(os.listdir(queue_dir))
    except FileNotFoundError:
        return True
    for other in entries:
        if other >= entry:
            return True
        if other.startswith(".") or "_" not in other:
            continue
        if _waiting(jobs_dir, other):
            return False
        (queue_dir / other).unlink(missing_ok=True)
    return True

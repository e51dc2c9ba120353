"""Job-directory files and process bookkeeping shared by the local backend and its supervisor.

Everything here uses the standard library only: the supervisor imports this module in every
job, so it must start fast. See :mod:`autolab.backends.local` for the design.
"""

from __future__ import annotations

import enum
import fcntl
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | list | set | frozenset):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=_jsonable)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(_dumps(data))
    os.replace(tmp, path)


def write_json_once(path: Path, data: Any) -> bool:
    """Create ``path`` with ``data`` unless it exists; True when this call created it.

    A hard link of a complete temporary file makes the file appear whole, and only once.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(_dumps(data))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: atomic, but not exclusive
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def safe_name(text: str, limit: int = 64) -> str:
    """``text`` reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", text)[:limit] or "_"


# -- processes ---------------------------------------------------------------------------------
@functools.cache
def boot_id() -> str:
    """This boot's id (Linux), so that pids from before a reboot are never trusted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_HAVE_PROC = Path("/proc/self/stat").exists()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return None
    return fields[19]


def identity(pid: int) -> dict[str, Any]:
    """What identifies process ``pid`` across pid reuse and reboots."""
    return {"pid": pid, "start": start_ticks(pid), "boot_id": boot_id()}


def is_alive(ident: dict[str, Any]) -> bool:
    """Whether the process recorded by :func:`identity` still runs (zombies are dead)."""
    pid = int(ident["pid"])
    if ident.get("boot_id") and ident["boot_id"] != boot_id():
        return False
    if _HAVE_PROC:
        now = start_ticks(pid)
        return now is not None and (ident.get("start") is None or now == ident["start"])
    try:  # no /proc (macOS): the best we can do
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_is_ours(started: dict[str, Any]) -> bool:
    """Whether the process group recorded in ``started`` may still be signalled safely.

    A group id stays reserved while any member lives; the only risk is a new, unrelated
    process that got the leader's pid after the whole group died, which its start time shows.
    """
    if started.get("boot_id") and started["boot_id"] != boot_id():
        return False
    now = start_ticks(int(started["pgid"]))
    return now is None or started.get("start") is None or now == started["start"]


def children_of(pid: int) -> list[int]:
    """Live direct children of ``pid`` (orphans adopted by a subreaper show up here)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X", "x"):
            found.append(int(entry))
    return found


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


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


# -- hardware ----------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (falls back to the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return os.uname().machine


def gpu_inventory() -> list[dict[str, str]]:
    """GPUs that ``nvidia-smi`` lists (index, uuid, name); empty without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,uuid,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) == 3:
            gpus.append({"index": parts[0], "uuid": parts[1], "name": parts[2]})
    return gpus


def hardware(slot: str, gpu: str | None, inventory: list[dict[str, str]]) -> dict[str, str]:
    """``JobState.hardware`` for a job in ``slot`` pinned to ``gpu`` (None: all GPUs)."""
    info = {"host": socket.gethostname(), "cpu": cpu_model(), "slot": slot}
    if gpu is not None:
        names = [g["name"] for g in inventory if gpu in (g["index"], g["uuid"])]
        if names:
            info["gpu"] = names[0]
    elif inventory:
        names = sorted({g["name"] for g in inventory})
        info["gpu"] = (
            f"{len(inventory)}x {names[0]}" if len(names) == 1 and len(inventory) > 1
            else ", ".join(names)
        )
    return info

"""Processes that outlive the program that started them: identity across pid reuse and
reboots, process-group signals, adopted children, and the hardware a job runs on.

Standard library only: the job supervisor (:mod:`autolab_core.supervisor`) imports it.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any


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

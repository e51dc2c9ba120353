"""What runs on the compute node: the command of one autolab job, inside a submitit job.

submitit pickles :func:`run_job` by reference, so the node imports this module from the same
environment as the orchestrator (the shared filesystem). It uses the standard library only.

The run directory (on the shared filesystem) receives:

* ``output.log``: the command's stdout and stderr, appended across retries;
* ``started.json`` and ``hardware.json``: which SLURM job and node run it, with CPU/GPU models;
* ``exit.json``: the command's exit record, written when it ends, so the backend knows how it
  ended even on a cluster without accounting (``sacct``) and before ``squeue`` says so.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Seconds between SIGTERM and SIGKILL when the wrapper stops a command at its time limit.
KILL_GRACE_S = 5.0


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str:
    """This job's id as squeue prints it: ``123``, or ``123_4`` for an array task."""
    env = os.environ if environ is None else environ
    array_id, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_id and task:
        return f"{array_id}_{task}"
    return env.get("SLURM_JOB_ID", "")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (readers on other hosts never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_models() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n.strip() for n in out.splitlines() if n.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "all"):
        count = len([v for v in visible.split(",") if v.strip()])
        names = names[:count] if count <= len(names) else names
    if not names:
        return None
    return f"{names[0]} x{len(names)}" if len(set(names)) == 1 else ", ".join(names)


def hardware() -> dict[str, str]:
    """Node name, CPU model and count, GPU model(s) when there are any, SLURM partition."""
    info = {
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "cpu": _cpu_model(),
        "cpus": os.environ.get("SLURM_CPUS_ON_NODE") or str(os.cpu_count() or ""),
        "slurm_job_id": slurm_job_id(),
        "partition": os.environ.get("SLURM_JOB_PARTITION", ""),
    }
    gpu = _gpu_models()
    if gpu:
        info["gpu"] = gpu
    return {k: v for k, v in info.items() if v}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, then SIGKILL it after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def run_job(
    run_dir: str,
    command: Sequence[str],
    workdir: str,
    env: Mapping[str, str],
    time_limit_s: float | None,
    own_python: bool = False,
) -> int:
    """Run ``command`` in ``workdir`` with ``env`` added; record how it ended in ``run_dir``.

    With ``own_python`` the command's first word is replaced by this interpreter (the one
    ``[backend.slurm] python`` started, e.g. inside a container), so that wrapper applies once.
    Raises when the command fails, so that SLURM records the job as FAILED too.
    """
    if own_python:
        command = [sys.executable, *list(command)[1:]]
    rd = Path(run_dir)
    job_id = slurm_job_id()
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    signals: list[str] = []

    def note_signal(signum: int, _frame: Any) -> None:
        # SLURM signals every process of the job on cancel, time limit and preemption; the
        # command gets them too. Remember them so the exit record is not mistaken for a
        # normal end. (This also replaces submitit's handlers: its USR2 one aborts the job.)
        signals.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, note_signal)
    signal.signal(signal.SIGCONT, signal.SIG_DFL)  # the backend's harmless warning signal

    (rd / "exit.json").unlink(missing_ok=True)
    started = time.time()
    write_json(rd / "started.json", {"job_id": job_id, "restart": restart, "started_at": started})
    write_json(rd / "hardware.json", hardware())
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    timed_out = False
    with open(rd / "output.log", "ab") as log:
        if log.tell() > 0:
            log.write(f"--- autolab: retry on SLURM job {job_id} (restart {restart}) ---\n".encode())
            log.flush()
        proc = subprocess.Popen(
            list(command), cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            proc.wait(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
        except BaseException:
            _stop(proc)
            raise
    record = {
        "job_id": job_id,
        "restart": restart,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "signals": signals,
        "started_at": started,
        "finished_at": time.time(),
    }
    write_json(rd / "exit.json", record)
    if timed_out:
        raise TimeoutError(f"the command ran past its time limit of {time_limit_s:g} s and was stopped")
    if proc.returncode != 0:
        raise RuntimeError(f"the command exited with code {proc.returncode}")
    return 0

"""Checks the slurm backend runs before the first job (from ``SlurmBackend.check()``).

* :func:`limits_problem`: the partition exists (hidden ones included, ``sinfo --all``), the
  effective wall time fits its MaxTime, and, where the cluster keeps accounting, the
  account/partition/QOS is one of the user's associations (``sacctmgr``).
* :func:`storage_probe`: one tiny job, started exactly as the backend's jobs are (same
  ``setup`` lines, same ``python``, same sbatch options), reads a file the orchestrator wrote
  under the lab's state directory and under the backend's folder, writes an answer next to it,
  and imports the job runner (``autolab_core.runner``). A success is remembered (per options),
  so later starts cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from autolab.backends import slurm_cli as cli
from autolab.backends import slurm_reasons
from autolab.backends.slurm_options import SlurmOptions
from autolab_core.errors import BackendError

_SHARED = (
    "the filesystem holding it must be shared between the login node (where autolab runs) and "
    "the compute nodes: put the lab on a shared filesystem (your home or project space, not "
    "/tmp or a node-local disk) and clone it there, or set [backend.slurm] folder to a shared "
    "path for the job files; the experiments' checkouts (workdir) live in the lab's .autolab "
    "folder, so the lab itself must be shared too"
)

_JOB = """\
import pathlib, sys
try:
    import autolab_core.runner  # noqa: F401  (the job runner; standard library only)
except Exception as exc:
    print("AUTOLAB_PROBE_RUNNER_IMPORT_FAILED", type(exc).__name__, exc, flush=True)
    sys.exit(4)
for arg in sys.argv[1:]:
    path = pathlib.Path(arg)
    try:
        token = path.read_text()
    except OSError as exc:
        print("AUTOLAB_PROBE_NOT_SHARED", arg, exc, flush=True)
        sys.exit(3)
    path.with_suffix(".answer").write_text(token)
print("AUTOLAB_PROBE_OK", sys.executable, flush=True)
"""


def limits_problem(opts: SlurmOptions, wall_minutes: int | None, user: str) -> str | None:
    """None when the partition, wall time and association are fine; else what to change."""
    limits = cli.sinfo_limits()
    partition = opts.partition or cli.default_partition()
    if opts.partition and opts.partition not in limits:
        return (f"[backend.slurm] partition = {opts.partition!r} does not exist; partitions here "
                f"(sinfo --all): {', '.join(limits)}")
    max_minutes = limits.get(partition) if partition else None
    if wall_minutes is not None and max_minutes is not None and wall_minutes > max_minutes:
        origin = ("[backend.slurm] time_limit" if opts.time_limit is not None
                  else "[run] time_limit plus 2 min")
        return (f"the wall time asked, {wall_minutes} min ({origin}), exceeds partition "
                f"{partition!r}'s MaxTime of {max_minutes:g} min: lower [run] time_limit or set "
                f"[backend.slurm] time_limit to at most {max_minutes:g}m, or choose another "
                "partition (sinfo --all -o '%P %l')")
    if cli.accounting_enabled():
        return cli.association_problem(cli.associations(user), opts.account, opts.partition, opts.qos)
    return None


def _key(opts: SlurmOptions, paths: Sequence[Path], flags: Sequence[str]) -> str:
    raw = json.dumps([opts.python, opts.setup, [str(p) for p in paths], list(flags), sys.executable])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _script(opts: SlurmOptions, inputs: Sequence[Path]) -> str:
    python = opts.python or shlex.quote(sys.executable)
    lines = ["#!/bin/bash", *opts.setup,
             f"{python} -c {shlex.quote(_JOB)} {' '.join(shlex.quote(str(p)) for p in inputs)}"]
    return "\n".join(lines) + "\n"


def storage_probe(opts: SlurmOptions, folder: Path, state_dir: Path, flags: Sequence[str],
                  user: str) -> str | None:
    """Run the probe job (or remember it passed); None when the compute nodes see the lab."""
    dirs = [state_dir / "probe"] + ([] if folder.is_relative_to(state_dir) else [folder / "probe"])
    ok_file = folder / "probe-ok.json"
    key = _key(opts, dirs, flags)
    try:
        if json.loads(ok_file.read_text()).get("key") == key:
            return None
    except (OSError, ValueError):
        pass
    token = uuid.uuid4().hex
    inputs = []
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{token}.in").write_text(token)
        inputs.append(d / f"{token}.in")
    log_path = dirs[-1] / f"{token}.log"
    argv = ["sbatch", "--parsable", f"--job-name=autolab-probe-{token[:8]}", f"--output={log_path}",
            f"--chdir={folder}", "--time=2", *[f for f in flags if not f.startswith("--time=")]]
    try:
        proc = subprocess.run(argv, input=_script(opts, inputs), capture_output=True, text=True,
                              timeout=cli.COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the startup probe job could not be submitted: {exc}"
    if proc.returncode != 0:
        return f"the startup probe job was refused: {cli.sbatch_error_lines(proc.stderr)}"
    job_id = proc.stdout.strip().split(";")[0]
    waited = _wait(job_id, user, opts.probe_timeout)
    if waited is not None:
        return waited
    for path in inputs:
        if not _appears(path.with_suffix(".answer")):
            return _explain(path, log_path, opts)
    ok_file.write_text(json.dumps({"key": key, "at": time.time(), "job_id": job_id}))
    for path in inputs:
        for f in (path, path.with_suffix(".answer"), log_path):
            f.unlink(missing_ok=True)
    return None


def _appears(path: Path, wait_s: float = 10.0) -> bool:
    """Whether ``path`` exists, waiting a little for a shared filesystem's caches."""
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _wait(job_id: str, user: str, timeout: float) -> str | None:
    """Wait for the probe job to end; a reason when it cannot run (or does not in time)."""
    deadline = time.monotonic() + timeout
    failures = 0
    while time.monotonic() < deadline:
        try:
            row = cli.squeue(user).get(job_id)
            failures = 0
        except BackendError:
            failures += 1
            time.sleep(slurm_reasons.backoff(failures, 1.0, cap=30.0))
            continue
        if row is None or row.state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            return None
        if row.state == "PENDING" and (fix := slurm_reasons.permanent_pending(row.reason)):
            _cancel(job_id)
            return f"the startup probe job {job_id} can never start ({row.reason}): {fix}"
        time.sleep(0.5)
    _cancel(job_id)
    return (f"the startup probe job {job_id} did not finish within probe_timeout = {timeout:g} s "
            "(the queue may be full); raise [backend.slurm] probe_timeout, or set probe = false")


def _cancel(job_id: str) -> None:
    try:
        cli.scancel(job_id)
    except BackendError:
        pass


def _explain(path: Path, log_path: Path, opts: SlurmOptions) -> str:
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if "AUTOLAB_PROBE_RUNNER_IMPORT_FAILED" in log:
        line = next(ln for ln in log.splitlines() if "AUTOLAB_PROBE_RUNNER_IMPORT_FAILED" in ln)
        python = opts.python or sys.executable
        return (f"the startup probe job could not import the job runner with python = {python!r} "
                f"({line.split(' ', 1)[1]}): install autolab in that environment (or add its "
                "activation to [backend.slurm] setup), or set [backend.slurm] python")
    if log and "AUTOLAB_PROBE_NOT_SHARED" not in log and "AUTOLAB_PROBE_OK" not in log:
        return (f"the startup probe job did not run its check (python = "
                f"{opts.python or sys.executable!r}, setup = {opts.setup!r}): {log.strip()[-400:]}")
    return (f"a compute node cannot see {path.parent} (the startup probe job could not read "
            f"{path.name} that this host wrote there): {_SHARED}")

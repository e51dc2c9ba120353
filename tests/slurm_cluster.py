"""Helpers for tests against the local SLURM cluster started by ``scripts/local-slurm.sh up``.

Nothing here imitates SLURM: the helpers run the real ``sinfo``, ``squeue``, ``scontrol`` and
``sbatch`` against the one-node cluster.
"""

from __future__ import annotations

import functools
import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
UP_HINT = "run `scripts/local-slurm.sh up` (as root) first, or set AUTOLAB_SKIP_SLURM=1 to skip"


@functools.cache
def cluster_problem() -> str | None:
    """None when the local cluster answers and its node takes jobs; otherwise what is wrong."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "the SLURM client commands are not installed"
    try:
        proc = subprocess.run(["sinfo", "--noheader", "-o", "%P %T"], capture_output=True,
                              text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    if not any(s in proc.stdout for s in ("idle", "mixed", "alloc", "completing")):
        return f"no usable node: {proc.stdout.strip()!r}"
    return None


def require_cluster() -> None:
    """Fail (never skip silently) when the cluster is down, unless AUTOLAB_SKIP_SLURM=1."""
    if os.environ.get("AUTOLAB_SKIP_SLURM") == "1":
        pytest.skip("AUTOLAB_SKIP_SLURM=1: SLURM tests skipped on request")
    problem = cluster_problem()
    if problem:
        pytest.fail(f"the local SLURM cluster is not up ({problem}): {UP_HINT}", pytrace=False)


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc.stdout


def job_field(job_id: str, field: str) -> str:
    """One squeue field (e.g. State, RestartCnt) of a job, '' when squeue has forgotten it."""
    out = sh("squeue", "--noheader", "--states=all", "--array", f"--jobs={job_id}",
             f"--Format={field}:|", check=False)
    return out.strip().rstrip("|")


def my_active_jobs() -> int:
    out = sh("squeue", "--noheader", "--array", f"--user={getpass.getuser()}",
             "--states=PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED", "--format=%i")
    return len(out.split())


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


#: The non-root user that submits jobs in the campus-like tests (created on first use).
LAB_USER = "autolab-lab"


def lab_user_home() -> Path:
    """Create the unprivileged submitting user once (needs root); its home directory."""
    if subprocess.run(["id", LAB_USER], capture_output=True).returncode != 0:
        sh("useradd", "--create-home", "--shell", "/bin/bash", LAB_USER)
    return Path(sh("getent", "passwd", LAB_USER).split(":")[5])


def user_dir(name: str) -> Path:
    """A fresh directory owned by the lab user in its home (on the filesystem jobs share).

    Directories of earlier test runs (over a day old) are removed first.
    """
    base = lab_user_home() / "tests"
    if base.is_dir():
        for old in base.iterdir():
            if time.time() - old.stat().st_mtime > 86400:
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink()
    path = base / name
    sh("runuser", "-u", LAB_USER, "--", "mkdir", "-p", str(path))
    return path


def as_lab_user(argv: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the unprivileged user, with this checkout on PYTHONPATH."""
    home = lab_user_home()
    tmp = home / "tmp"  # the user's own TMPDIR: /tmp/__pycache__ etc. may belong to root here
    if not tmp.is_dir():
        sh("runuser", "-u", LAB_USER, "--", "mkdir", "-p", str(tmp))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(home),
           "LANG": "C.UTF-8", "TMPDIR": str(tmp)}
    return subprocess.run(["runuser", "-u", LAB_USER, "--", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)

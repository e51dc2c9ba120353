"""Keeping the slurm backend's folder within quota: removing finished runs, measuring disk use.

A run directory whose job has ended (``final.json``) and whose end is older than the retention
is removed with its index entries and submitit's files of its SLURM jobs (pickles, sbatch
script, the jobs' own logs). Running, queued and recent runs are never touched.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from autolab.backends.slurm_store import RunDir, Store


def disk_usage(root: Path) -> int:
    """Bytes used by the files under ``root`` (the backend's folder)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _ended_at(run: RunDir) -> float | None:
    try:
        return (run.path / "final.json").stat().st_mtime
    except OSError:
        return None


def remove_finished(store: Store, retention_s: float, now: float | None = None) -> list[str]:
    """Remove runs that ended more than ``retention_s`` ago; the experiment ids removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    job_ids: set[str] = set()
    with store.lock():
        for exp_dir in sorted((store.root / "runs").iterdir()):
            for run_path in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
                run = RunDir(run_path)
                ended = _ended_at(run)
                if ended is None or now - ended < retention_s or store.is_queued(run):
                    continue
                job_ids |= {a["job_id"] for a in run.attempts()} | {run.handle_id()}
                removed.append(exp_dir.name)
                shutil.rmtree(run_path, ignore_errors=True)
                RunDir.forget(run_path)
            if exp_dir.is_dir() and not any(exp_dir.iterdir()):
                exp_dir.rmdir()
        for job_id in job_ids:
            (store.root / "index" / job_id).unlink(missing_ok=True)
        if job_ids:
            arrays = {j.split("_")[0] for j in job_ids}
            for f in store.submitit_dir.iterdir():
                stem = f.name.split("_")[0].split(".")[0]
                if stem in job_ids or (stem in arrays and not _array_alive(store, stem)):
                    f.unlink(missing_ok=True)
    return sorted(set(removed))


def _array_alive(store: Store, array_id: str) -> bool:
    """Whether an index entry still names a task of job array ``array_id`` (kept runs)."""
    return any((store.root / "index").glob(f"{array_id}_*"))

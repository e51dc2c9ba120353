"""Upkeep of a long run: old job files and checkouts go, disk use is recorded.

:class:`Upkeep` runs at the start of ``autolab run`` and then about every ``every_s`` (an
hour): it calls the backend's ``cleanup()`` (SLURM job folders, HF code archives past the
backend's own retention), removes the exported trees of experiments that ended more than
``[run] keep_checkouts`` ago, and writes the disk use of the backend and of the lab's state
directory to ``<state>/disk.json``, which ``autolab status`` shows
(:func:`autolab.reporting.status.read_disk_usage`).
Nothing here may stop a run: a failure is logged and tried again next time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from autolab.reporting.status import DISK_FILE
from autolab.run.jobs import Jobs
from autolab_core.models import Experiment

log = logging.getLogger(__name__)

def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed; vanished files skipped)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
    return total


def ended_at(exp: Experiment) -> float | None:
    """When ``exp`` ended (its last status change), or None while it may still run."""
    if not exp.done or not exp.history:
        return None
    return exp.history[-1].at


class Upkeep:
    """Hourly chores of a run over ``jobs`` (its backend, lab and ledger)."""

    def __init__(self, jobs: Jobs, keep_checkouts_s: float | None, every_s: float = 3600.0) -> None:
        self.jobs = jobs
        self.keep_checkouts_s = keep_checkouts_s
        self.every_s = every_s
        self._last = float("-inf")

    def due(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self._last >= self.every_s

    def maybe_run(self, now: float | None = None) -> bool:
        """Run the chores if an hour has passed since the last time; True when they ran."""
        now = time.time() if now is None else now
        if not self.due(now):
            return False
        self._last = now
        self.run(now)
        return True

    def run(self, now: float | None = None) -> dict[str, Any]:
        """Every chore once; returns what was done (cleaned ids, removed checkouts, disk)."""
        now = time.time() if now is None else now
        done: dict[str, Any] = {"cleaned": [], "checkouts": []}
        try:
            done["cleaned"] = list(self.jobs.backend.cleanup())
        except Exception as exc:  # housekeeping never ends a run
            log.warning("backend cleanup failed: %s", exc)
        try:
            done["checkouts"] = self.remove_old_checkouts(now)
        except Exception as exc:
            log.warning("removing old checkouts failed: %s", exc)
        done["disk"] = self.record_disk_usage(now)
        return done

    def remove_old_checkouts(self, now: float) -> list[str]:
        """Remove the exported trees of experiments that ended more than ``keep_checkouts`` ago
        (failed ones included: they are kept that long for a post-mortem)."""
        if self.keep_checkouts_s is None:
            return []
        removed = []
        for exp in self.jobs.ledger.experiments():
            at = ended_at(exp)
            path = self.jobs.workdir(exp)
            if at is not None and now - at >= self.keep_checkouts_s and path.exists():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(exp.id)
        return removed

    def record_disk_usage(self, now: float) -> dict[str, Any]:
        """Write (and return) the bytes used by the backend and by the lab's state directory."""
        state_dir = Path(self.jobs.lab.state_dir)
        try:
            backend = self.jobs.backend.disk_usage()
        except Exception as exc:
            log.warning("backend disk_usage failed: %s", exc)
            backend = None
        usage = {"backend": backend, "backend_name": self.jobs.backend.name,
                 "state_dir": tree_bytes(state_dir), "at": now}
        tmp = state_dir / f"{DISK_FILE}.tmp"
        tmp.write_text(json.dumps(usage))
        os.replace(tmp, state_dir / DISK_FILE)
        return usage

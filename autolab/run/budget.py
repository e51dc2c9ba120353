"""Money for compute: what is spent plus what jobs in flight may still cost, against a limit.

A job's estimate (``JobBackend.estimate_cost``) is *reserved* before it is submitted and stays
reserved until its real cost is known (:meth:`Budget.settle`), so several workers submitting
at once cannot together cross ``[budget] usd``: a submission that could cross it is refused
(:class:`OverBudget`) and never reaches the backend. The ledger is a small JSON file updated
under an exclusive ``flock`` (and a thread lock), so threads and processes of one lab share it.

The loop uses it as :func:`submit_within_budget` does: ``reserve`` -> ``backend.submit`` ->
``release`` if submitting failed; ``settle`` with ``JobState.cost_usd`` when the job ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autolab_core.errors import AutolabError
from autolab_core.interfaces import JobBackend
from autolab_core.models import JobHandle, JobSpec


class OverBudget(AutolabError):
    """Submitting this job could cross the money budget; nothing was submitted."""


class Budget:
    """The ledger of one lab (``path``): reserved estimates and settled costs, in USD."""

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, limit_usd: float | None, path: Path) -> None:
        self.limit_usd = limit_usd
        self.path = Path(path)
        with Budget._locks_guard:
            self._lock = Budget._locks.setdefault(str(self.path.resolve()), threading.Lock())

    @contextlib.contextmanager
    def _ledger(self) -> Iterator[dict[str, dict[str, float]]]:
        """The ledger, locked for this thread and process; written back on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text()) if self.path.exists() else {}
                ledger = {"reserved": dict(data.get("reserved", {})),
                          "spent": dict(data.get("spent", {}))}
                yield ledger
                tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True))
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reserve(self, key: str, estimate_usd: float) -> None:
        """Hold ``estimate_usd`` for job ``key``, or raise :class:`OverBudget` (nothing held)."""
        with self._ledger() as ledger:
            ledger["reserved"].pop(key, None)
            committed = sum(ledger["reserved"].values()) + sum(ledger["spent"].values())
            if self.limit_usd is not None and committed + estimate_usd > self.limit_usd + 1e-9:
                left = max(0.0, self.limit_usd - committed)
                raise OverBudget(
                    f"over budget: this job may cost ${estimate_usd:.2f}, ${left:.2f} of "
                    f"${self.limit_usd:.2f} is left once the jobs in flight are paid for "
                    "([budget] usd)")
            ledger["reserved"][key] = float(estimate_usd)

    def settle(self, key: str, cost_usd: float) -> None:
        """Job ``key`` ended and cost ``cost_usd``: it replaces the reservation."""
        with self._ledger() as ledger:
            ledger["reserved"].pop(key, None)
            ledger["spent"][key] = ledger["spent"].get(key, 0.0) + float(cost_usd)

    def release(self, key: str) -> None:
        """Job ``key`` was not submitted after all: give its reservation back."""
        with self._ledger() as ledger:
            ledger["reserved"].pop(key, None)

    def totals(self) -> dict[str, float]:
        """``{"spent", "reserved", "left"}`` in USD (``left`` is inf without a limit)."""
        with self._ledger() as ledger:
            spent, reserved = sum(ledger["spent"].values()), sum(ledger["reserved"].values())
        left = float("inf") if self.limit_usd is None else self.limit_usd - spent - reserved
        return {"spent": spent, "reserved": reserved, "left": left}


def submit_within_budget(budget: Budget, backend: JobBackend, spec: JobSpec,
                         key: str | None = None) -> JobHandle:
    """Reserve ``spec``'s estimate, then submit it; release the reservation if submitting
    fails. Raises :class:`OverBudget` before anything reaches the backend."""
    key = key or spec.experiment_id
    estimate: Any = backend.estimate_cost(spec)
    budget.reserve(key, float(estimate or 0.0))
    try:
        return backend.submit(spec)
    except BaseException:
        budget.release(key)
        raise

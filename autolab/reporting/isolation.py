"""Which sandbox each run ran in (``Experiment.hardware["isolation"]``, signed by the runner).

Levels, strongest first: ``bwrap`` (bubblewrap: the lab hidden, the checkout read-only, the
evaluation data hidden from training), ``landlock`` (the kernel's file-access rules), ``none``
(no sandbox: tampering is still detected by hashes, signed results and the ref guard).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from autolab_core.job import ISOLATION_LEVELS
from autolab_core.models import Experiment, ExperimentStatus


def isolation_of(exp: Experiment) -> str:
    """The level ``exp``'s run reported, ``-`` when it reported none (older records)."""
    return str(exp.hardware.get("isolation") or "-")


def finished_runs(experiments: Sequence[Experiment]) -> list[Experiment]:
    """Runs that ended with a result, oldest first."""
    done = [e for e in experiments if e.status is ExperimentStatus.FINISHED and e.result]
    return sorted(done, key=lambda e: e.history[-1].at if e.history else 0.0)


def isolation_summary(experiments: Sequence[Experiment]) -> str | None:
    """``isolation: bwrap (12 runs), none (1 run)`` over the finished runs; None without any."""
    counts = Counter(isolation_of(e) for e in finished_runs(experiments))
    if not counts:
        return None
    order = {level: i for i, level in enumerate(ISOLATION_LEVELS)}
    parts = [f"{level} ({n} run{'s' if n != 1 else ''})"
             for level, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], 99))]
    return "isolation: " + ", ".join(parts)

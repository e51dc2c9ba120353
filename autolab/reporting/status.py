"""``autolab status``: one rich renderable with what is running, queued, best, spent and odd.

API::

    status_from_experiments(experiments, *, metric, direction, latest=None, budget=None,
                            anomalies=(), now=None, queue_rows=10, metric_columns=4,
                            promotion=None) -> Group
    with_wait_reason(experiment, job_state) -> Experiment   # for the run loop, after a poll
    read_disk_usage(state_dir) -> dict | None                # what the run recorded (disk.json)

``latest`` is ``{experiment_id: {name: (step, value, wall_time)}}`` (see
:func:`autolab.reporting.curves.latest_metrics`), or anything ``latest_metrics`` accepts (a
pyarrow table, MetricPoints, a metric store); only running experiments are looked up.
``budget`` is a :class:`BudgetUsage`. ``anomalies`` defaults to the blocking flags the
experiments carry. ``promotion`` is the lab's ``[promotion]`` table (the best-so-far line uses
the gate's statistics, see :func:`.summary.leaderboard`). A waiting or running experiment's
``reason`` (e.g. the backend's pending reason, or why it is being stopped) is shown next to it.
Print it with ``rich.console.Console().print(...)``; :func:`autolab.reporting.lab.lab_status`
builds it for a lab on disk.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab.reporting.anomalies import Anomaly
from autolab.reporting.curves import latest_metrics
from autolab.reporting.isolation import finished_runs, isolation_of, isolation_summary
from autolab.reporting.summary import leaderboard
from autolab_core.config import PromotionSection
from autolab_core.models import (
    Direction,
    Experiment,
    ExperimentStatus,
    JobState,
    JobStatus,
    id_key,
)
from autolab_core.vocab import Flag


@attrs.frozen
class BudgetUsage:
    """Spent and allowed, per budget of ``[budget]`` (None: no limit)."""

    usd: float = 0.0
    usd_limit: float | None = None
    llm_usd: float = 0.0
    llm_usd_limit: float | None = None
    experiments: int = 0
    experiments_limit: int | None = None
    seconds: float = 0.0
    seconds_limit: float | None = None

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(budget, used, limit, left) as display strings."""

        def money(x: float) -> str:
            return f"${x:,.2f}"

        def hours(x: float) -> str:
            return f"{x / 3600:.1f} h"

        def row(name: str, used: float, limit: float | None, fmt: Any
                ) -> tuple[str, str, str, str]:
            if limit is None:
                return (name, fmt(used), "no limit", "-")
            left = max(0.0, limit - used)
            return (name, fmt(used), fmt(limit), f"{fmt(left)} ({left / limit:.0%})"
                    if limit > 0 else fmt(left))

        return [
            row("money", self.usd, self.usd_limit, money),
            row("LLM money", self.llm_usd, self.llm_usd_limit, money),
            row("experiments", self.experiments, self.experiments_limit, lambda x: f"{x:.0f}"),
            row("time", self.seconds, self.seconds_limit, hours),
        ]


def with_wait_reason(experiment: Experiment, job_state: JobState) -> Experiment:
    """``experiment`` as the live views should show it after a poll of its job.

    While the job is pending, ``reason`` carries the backend's pending reason (SLURM's
    ``Priority`` or ``Resources``, a full queue); once it runs or ends, that wait reason is
    cleared so it is never mistaken for why the job failed. A prune reason is kept.
    """
    reason = experiment.reason
    if job_state.status is JobStatus.PENDING:
        new = job_state.reason or reason
    elif experiment.status is ExperimentStatus.SUBMITTED and reason and \
            not reason.startswith("pruned"):
        new = None
    else:
        return experiment
    return experiment if new == reason else attrs.evolve(experiment, reason=new)


#: Where ``autolab run`` records disk use (``autolab.run.upkeep``), in the lab's state dir.
DISK_FILE = "disk.json"


def read_disk_usage(state_dir: Any) -> dict[str, Any] | None:
    """The disk use the run last recorded: ``{"backend", "backend_name", "state_dir", "at"}``
    (bytes; ``backend`` None when the backend keeps no files here), or None."""
    import json
    from pathlib import Path

    try:
        data = json.loads((Path(state_dir) / DISK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def disk_line(disk: Mapping[str, Any]) -> str:
    """``disk: backend slurm 1.2 GB, lab state dir 3.4 GB (at 07:12)``."""
    parts = []
    if disk.get("backend") is not None:
        parts.append(f"backend {disk.get('backend_name') or ''} {_bytes(disk['backend'])}")
    if disk.get("state_dir") is not None:
        parts.append(f"lab state dir {_bytes(disk['state_dir'])}")
    at = disk.get("at")
    when = f" (at {time.strftime('%H:%M', time.localtime(at))})" if at else ""
    return "disk: " + (", ".join(parts) or "unknown") + when


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def _value(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def status_from_experiments(
    experiments: Sequence[Experiment],
    *,
    metric: str,
    direction: Direction,
    latest: Any = None,
    budget: BudgetUsage | None = None,
    anomalies: Sequence[Anomaly] = (),
    now: float | None = None,
    queue_rows: int = 10,
    metric_columns: int = 4,
    promotion: PromotionSection | None = None,
    notes: Sequence[str] = (),
    failure_rows: int = 5,
    disk: Mapping[str, Any] | None = None,
) -> Any:
    """The status screen as a ``rich.console.Group``. ``notes``: lines about the lab as a whole
    (e.g. the seed check of :func:`autolab.seed_check.seed_status`), shown under the summary;
    the last ``failure_rows`` failed experiments are listed with their reasons (output tails);
    ``disk``: see :func:`read_disk_usage`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    counts = Counter(e.status.value for e in experiments)
    running = [e for e in experiments if e.status is ExperimentStatus.STARTED]
    waiting = [e for e in experiments
               if e.status in (ExperimentStatus.QUEUED, ExperimentStatus.SUBMITTED)]
    parts: list[Any] = []
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no experiments yet"
    parts.append(Text(f"{len(experiments)} experiments: {summary}", style="bold"))
    parts += [Text(note, style="yellow") for note in notes]
    isolation = isolation_summary(experiments)
    if isolation:
        parts.append(Text(isolation, style="yellow" if "none" in isolation else "dim"))

    entries = leaderboard(experiments, direction, promotion)
    if entries:
        b = entries[0]
        effect = "" if b.effect is None else (
            f", {b.effect:+.4g}" + ("" if b.uncertainty is None else f" ± {b.uncertainty:.2g}")
            + " vs main")
        parts.append(Text(f"best so far: {b.experiment_id} {b.title!r}: {metric} "
                          f"{_value(b.value)}{effect} ({b.n_seeds} seed(s))", style="green"))
    else:
        parts.append(Text("best so far: no candidate has a result yet", style="dim"))

    if latest is not None and not isinstance(latest, Mapping):
        latest = latest_metrics(latest, [e.id for e in running]) if running else {}
    latest = latest or {}
    names = sorted({n for e in running for n in latest.get(e.id, {})})[:metric_columns]
    table = Table(title=f"running ({len(running)})", title_justify="left", expand=False)
    notes = any(e.reason for e in running)
    for col in ("experiment", "hypothesis", "slot", "elapsed", "step", *names,
                *(("note",) if notes else ())):
        table.add_column(col, no_wrap=col not in ("hypothesis", "note"))
    for e in sorted(running, key=lambda e: (e.at(ExperimentStatus.STARTED) or 0.0, id_key(e.id))):
        vals = latest.get(e.id, {})
        step = max((v[0] for v in vals.values()), default=None)
        started = e.at(ExperimentStatus.STARTED) or now
        table.add_row(e.id, e.hypothesis.title[:40], e.slot or "-", _elapsed(now - started),
                      "-" if step is None else str(step),
                      *[_value(vals[n][1]) if n in vals else "-" for n in names],
                      *((e.reason or "",) if notes else ()))
    parts.append(table)

    queue = Table(title=f"queue ({len(waiting)})", title_justify="left")
    for col in ("experiment", "hypothesis", "role", "status", "waiting", "why"):
        queue.add_column(col)
    for e in sorted(waiting, key=lambda e: (e.history[0].at if e.history else 0.0,
                                            id_key(e.id)))[:queue_rows]:
        since = e.history[0].at if e.history else now
        queue.add_row(e.id, e.hypothesis.title[:50], e.role, e.status.value, _elapsed(now - since),
                      e.reason or "-")
    if len(waiting) > queue_rows:
        queue.caption = f"... and {len(waiting) - queue_rows} more"
    parts.append(queue)

    finished = finished_runs(experiments)[-failure_rows:] if failure_rows > 0 else []
    if finished:
        rtable = Table(title=f"finished (the last {len(finished)})", title_justify="left")
        for col in ("experiment", "hypothesis", "role", "seed", metric, "isolation"):
            rtable.add_column(col, no_wrap=col != "hypothesis")
        for e in finished:
            assert e.result is not None
            rtable.add_row(e.id, Text(e.hypothesis.title[:40]), e.role, str(e.seed),
                           _value(e.result.value), isolation_of(e))
        parts.append(rtable)

    failed = [e for e in experiments if e.status is ExperimentStatus.FAILED]
    if failed and failure_rows > 0:
        ftable = Table(title=f"failed ({len(failed)}, the last {min(len(failed), failure_rows)})",
                       title_justify="left")
        for col in ("experiment", "hypothesis", "reason"):
            ftable.add_column(col, no_wrap=col == "experiment")
        last = sorted(failed, key=lambda e: (e.history[-1].at if e.history else 0.0, id_key(e.id)))
        for e in last[-failure_rows:]:
            ftable.add_row(e.id, Text(e.hypothesis.title[:40]), Text(e.reason or "-"))
        parts.append(ftable)

    if budget is not None:
        btable = Table(title="budgets", title_justify="left")
        for col in ("budget", "used", "limit", "left"):
            btable.add_column(col)
        for r in budget.rows():
            btable.add_row(*r)
        parts.append(btable)
    if disk:
        parts.append(Text(disk_line(disk), style="dim"))

    if not anomalies:
        anomalies = [Anomaly(e.id, f.kind, f.reason) for e in experiments
                     for f in map(Flag.parse, e.flags) if f.blocking]
    if anomalies:
        atable = Table(title=f"anomalies ({len(anomalies)})", title_justify="left")
        for col in ("experiment", "flag", "reason"):
            atable.add_column(col, style="red" if col == "flag" else None)
        for a in list(anomalies)[-10:]:
            atable.add_row(a.experiment_id, a.flag, a.reason)
        parts.append(atable)
    return Group(*parts)

"""The Reporter's views of a whole lab on disk: what ``autolab status`` and ``autolab report``
call with an ``autolab_core.lab.Lab``.

API::

    lab_status(lab, store=None, now=None) -> rich renderable
    write_lab_report(lab, out, store=None, png=None) -> list[Path]  # report.md/.html, PNGs
    budget_usage(lab, experiments, now) -> BudgetUsage
    llm_spend(conversations_dir) -> float

``store`` is the lab's metric store, opened by the caller (the CLI opens it as the run loop
does; while a run is going the ``parquet`` store opens read-only) and closed by the caller.
Without one the curves and the latest metrics are left out; the rest of the page renders.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from autolab.reporting.options import parse_reporter_options
from autolab.reporting.status import BudgetUsage, read_disk_usage, status_from_experiments
from autolab.run import gate
from autolab.seed_check import seed_status
from autolab_core.models import Experiment, ExperimentStatus
from autolab_core.vocab import Role


def _costs(node: Any) -> float:
    if isinstance(node, dict):
        total = 0.0
        usage = node.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("cost_usd"), int | float):
            total += float(usage["cost_usd"])
        return total + sum(_costs(v) for k, v in node.items() if k != "usage")
    if isinstance(node, list):
        return sum(_costs(v) for v in node)
    return 0.0


def llm_spend(conversations_dir: Path) -> float:
    """USD spent on LLM calls, summed over the recorded conversations (``usage.cost_usd``)."""
    total = 0.0
    for path in sorted(Path(conversations_dir).glob("*.json")):
        try:
            total += _costs(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return total


def budget_usage(lab: Any, experiments: list[Experiment], now: float) -> BudgetUsage:
    """Money, LLM money, experiments and wall time used against ``[budget]``.

    Time is the lab's wall time: from the first experiment's first event to the last event
    (to now while something runs).
    """
    b = lab.config.budget
    events = [ev.at for e in experiments for ev in e.history]
    running = any(e.status in (ExperimentStatus.SUBMITTED, ExperimentStatus.STARTED)
                  for e in experiments)
    seconds = ((now if running else max(events)) - min(events)) if events else 0.0
    started = sum(1 for e in experiments
                  if e.role == Role.CANDIDATE and e.at(ExperimentStatus.STARTED) is not None)
    return BudgetUsage(
        usd=sum(e.cost_usd for e in experiments), usd_limit=b.usd,
        llm_usd=llm_spend(lab.state_dir / "conversations"), llm_usd_limit=b.llm_usd,
        experiments=started, experiments_limit=b.max_experiments,
        seconds=seconds, seconds_limit=None if b.max_hours is None else b.max_hours * 3600,
    )


def lab_status(lab: Any, store: Any = None, now: float | None = None) -> Any:
    """The ``autolab status`` screen for ``lab`` (``store``: its metric store, or None)."""
    now = time.time() if now is None else now
    experiments = lab.load_experiments()
    cfg = lab.config
    return status_from_experiments(
        experiments, metric=cfg.metric.name, direction=cfg.metric.dir, latest=store,
        budget=budget_usage(lab, experiments, now), now=now, promotion=cfg.promotion,
        notes=[line for line in [seed_line(lab, experiments)] if line],
        disk=read_disk_usage(lab.state_dir),
    )


def seed_line(lab: Any, experiments: list[Experiment]) -> str | None:
    """The seed check on the baselines of the current ``main`` (None: they differ, or too few)."""
    cfg = lab.config
    code = lab.files_hash(lab.main_commit(), sorted({*cfg.files.editable, *cfg.files.protected}))
    return seed_status(gate.values(gate.main_runs(experiments, code)), cfg.metric.name)


def write_lab_report(lab: Any, out: Path, store: Any = None, png: bool | None = None
                     ) -> list[Path]:
    """Write the report of ``lab`` into ``out``; PNGs when matplotlib is installed."""
    from autolab.reporting.report import build_report

    cfg = lab.config
    options = parse_reporter_options(cfg.reporter)
    if png is None:
        png = importlib.util.find_spec("matplotlib") is not None
    files = build_report(
        Path(out), lab.load_experiments(), store, png=png, metric=cfg.metric.name,
        direction=cfg.metric.dir, curve_metric=options.metric, title=f"autolab: {cfg.name}",
        promotion=cfg.promotion,
    )
    return [files.markdown, files.html, *files.pngs]

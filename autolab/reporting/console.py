"""What the terminal shows: the functions ``autolab run``, ``status`` and ``report`` call.

API::

    print_summary(lab, experiments, console, *, since=None, ids=None, top=10, max_rows=40)
    live_table(loop) -> rich Table          # what runs now, kept at the bottom of a terminal
    print_status(lab, console, store=None)
    write_report(lab, out, store=None) -> list[Path]
    open_store(lab, pm=None) -> MetricStore | None   # the lab's store, for reading

``print_status`` and ``write_report`` open the lab's metric store themselves when the caller
passes none (and close what they opened); a store the caller passes stays open.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autolab.reporting.isolation import isolation_of, isolation_summary
from autolab.reporting.lab import lab_status, write_lab_report
from autolab.reporting.summary import run_summary
from autolab_core.errors import AutolabError
from autolab_core.interfaces import MetricStore
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus, id_key
from autolab_core.plugins import PluginManager, make_store
from autolab_core.vocab import Verdict


def print_summary(lab: Lab, experiments: Sequence[Experiment], console: Any, *,
                  since: float | None = None, ids: Collection[str] | None = None,
                  top: int = 10, max_rows: int = 40) -> None:
    """This session's experiments (those with an event since ``since`` or ids in ``ids``; the
    newest ``max_rows``), the promotions, and the leaderboard's ``top`` rows: never a row per
    experiment ever run."""
    from rich.table import Table

    cfg = lab.config
    metric = cfg.metric.name
    s = run_summary(experiments, cfg.metric.dir, since=since, ids=ids, top=top,
                    max_rows=max_rows, promotion=cfg.promotion)
    table = Table(title=f"autolab: {s.counts['experiments']} runs this session in "
                        f"{lab.root.name} ({s.total} in the lab)")
    for col in ("id", "role", "idea", metric, "verdict", "isolation"):
        table.add_column(col)
    for exp in s.session:
        value = "" if exp.result is None else f"{exp.result.value:.4f}"
        style = "green" if exp.verdict == Verdict.PROMOTED else None
        table.add_row(exp.id, exp.role, exp.hypothesis.title[:60], value,
                      exp.verdict or exp.status.value,
                      isolation_of(exp) if exp.result is not None else "", style=style)
    isolation = isolation_summary(s.session)
    if isolation:
        table.caption = isolation
    if s.hidden:
        table.caption = (f"... and {s.hidden} earlier experiments of this session"
                         + (f"; {isolation}" if isolation else ""))
    console.print(table)
    if s.top:
        board = Table(title=f"leaderboard: top {len(s.top)}")
        for col in ("id", "idea", metric, "effect ± err", "seeds", "verdict"):
            board.add_column(col)
        for e in s.top:
            effect = "" if e.effect is None else (
                f"{e.effect:+.4f}" + ("" if e.uncertainty is None else f" ± {e.uncertainty:.3f}"))
            board.add_row(e.experiment_id, e.title[:60], f"{e.value:.4f}", effect,
                          str(e.n_seeds), e.status)
        console.print(board)
    c = s.counts
    console.print(f"{c['promoted']} promoted, {c['failed']} failed, {c['rejected']} rejected "
                  f"this session. main is {lab.main_commit()[:12]}.")
    for exp in s.promoted:
        console.print(f"  [green]promoted[/] {exp.id} {exp.hypothesis.title}: {exp.reason}")


def live_table(loop: Any) -> Any:
    """The table ``autolab run`` keeps at the bottom of a terminal: what runs now, where, and
    why a submitted job still waits. ``loop`` has ``experiments()`` and ``running()``."""
    from rich.table import Table

    exps = loop.experiments()
    running = sorted(loop.running(), key=lambda e: id_key(e.id))
    queued = sum(1 for e in exps if e.status is ExperimentStatus.QUEUED)
    promoted = sum(1 for e in exps if e.verdict == Verdict.PROMOTED)
    table = Table(title=f"running: {len(running)}   queued: {queued}   "
                        f"promoted: {promoted}", title_justify="left")
    for col in ("id", "role", "idea", "slot", "running for"):
        table.add_column(col)
    now = time.time()
    for exp in running:
        started = exp.at(ExperimentStatus.STARTED)
        since = (f"waiting: {exp.reason}" if exp.reason else "waiting") if started is None \
            else f"{now - started:.0f} s"
        table.add_row(exp.id, exp.role, exp.hypothesis.title[:50], exp.slot or "", since)
    return table


def open_store(lab: Lab, pm: PluginManager | None = None) -> MetricStore | None:
    """The lab's metric store (``[metrics] store``), or None with the reason on stderr."""
    try:
        return make_store(lab, pm)
    except AutolabError as exc:
        print(f"autolab: metric store unavailable, curves left out: {exc}", file=sys.stderr)
        return None


@contextmanager
def _store(lab: Lab, given: Any, wanted: bool = True) -> Iterator[Any]:
    if given is not None or not wanted:
        yield given
        return
    store = open_store(lab)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def print_status(lab: Lab, console: Any, store: Any = None) -> None:
    """``autolab status``: latest metrics of running jobs come from the metric store (opened
    here when something runs and ``store`` is None)."""
    running = any(e.status is ExperimentStatus.STARTED for e in lab.load_experiments())
    with _store(lab, store, wanted=running) as opened:
        console.print(lab_status(lab, opened))


def write_report(lab: Lab, out: Path, store: Any = None) -> list[Path]:
    """``autolab report``: report.md, report.html and PNG charts in ``out``."""
    with _store(lab, store) as opened:
        return write_lab_report(lab, out, opened)

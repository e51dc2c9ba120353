"""What the terminal shows at the end of a run, and the glue behind `status` and `report`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus


def print_summary(lab: Lab, experiments: Sequence[Experiment], console: Any) -> None:
    """A table of every candidate with its verdict, then the promotions."""
    from rich.table import Table

    metric = lab.config.metric.name
    table = Table(title=f"autolab: {len(experiments)} runs in {lab.root.name}")
    for col in ("id", "role", "idea", metric, "effect", "verdict"):
        table.add_column(col)
    for exp in experiments:
        if exp.role == "confirm":
            continue
        value = "" if exp.result is None else f"{exp.result.value:.4f}"
        effect = "" if exp.effect is None else f"{exp.effect:+.4f} ± {exp.effect_err or 0:.3f}"
        verdict = exp.verdict or exp.status.value
        style = "green" if exp.verdict == "promoted" else None
        table.add_row(exp.id, exp.role, exp.hypothesis.title[:60], value, effect, verdict,
                      style=style)
    console.print(table)
    promoted = [e for e in experiments if e.verdict == "promoted"]
    failed = [e for e in experiments if e.status is ExperimentStatus.FAILED]
    rejected = [e for e in experiments if e.status is ExperimentStatus.REJECTED]
    console.print(f"{len(promoted)} promoted, {len(failed)} failed, {len(rejected)} rejected. "
                  f"main is {lab.main_commit()[:12]}.")
    for exp in promoted:
        console.print(f"  [green]promoted[/] {exp.id} {exp.hypothesis.title}: {exp.reason}")


def live_table(orch: Any) -> Any:
    """The table `autolab run` keeps at the bottom of a terminal: what runs now, and where."""
    import time

    from rich.table import Table

    exps = orch.experiments()
    queued = sum(1 for e in exps if e.status is ExperimentStatus.QUEUED)
    promoted = sum(1 for e in exps if e.verdict == "promoted")
    table = Table(title=f"running: {len(orch.running())}   queued: {queued}   "
                        f"promoted: {promoted}", title_justify="left")
    for col in ("id", "role", "idea", "slot", "running for"):
        table.add_column(col)
    now = time.time()
    for exp in orch.running():
        started = exp.at(ExperimentStatus.STARTED)
        since = "waiting" if started is None else f"{now - started:.0f} s"
        table.add_row(exp.id, exp.role, exp.hypothesis.title[:50], exp.slot or "", since)
    return table


def print_status(lab: Lab, console: Any) -> None:
    from autolab.reporting.lab import lab_status

    console.print(lab_status(lab))


def write_report(lab: Lab, out: Path) -> list[Path]:
    from autolab.reporting.lab import write_lab_report

    return write_lab_report(lab, out)

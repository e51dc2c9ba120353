"""The sandbox level of each run in ``autolab status``, the run summary and the report."""

from __future__ import annotations

import attrs
from rich.console import Console

from autolab.reporting.isolation import isolation_summary
from autolab.reporting.report import render_html, render_markdown
from autolab.reporting.report_data import collect
from autolab.reporting.status import status_from_experiments
from autolab_core.models import Direction, Experiment, ExperimentStatus, Hypothesis, Result

S = ExperimentStatus


def run(exp_id: str, level: str | None, value: float = 1.0, role: str = "baseline",
        at: float = 10.0) -> Experiment:
    e = Experiment(id=exp_id, hypothesis=Hypothesis(id="h", title=f"run {exp_id}"),
                   base_commit="c1", base_code="code1", branch="b", role=role,
                   result=Result("val_bpb", value),
                   hardware={} if level is None else {"isolation": level, "host": "h"})
    return e.with_status(S.STARTED, at=at - 5).with_status(S.FINISHED, at=at)


RUNS = [run("b1", "bwrap", at=1), run("b2", "bwrap", 1.01, at=2),
        run("c1", "none", 0.9, role="candidate", at=3), run("old", None, at=4)]


def text(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_summary_counts_levels_of_finished_runs_strongest_first() -> None:
    assert isolation_summary(RUNS) == "isolation: bwrap (2 runs), none (1 run), - (1 run)"
    running = attrs.evolve(RUNS[0], history=RUNS[0].history[:1])
    assert isolation_summary([running]) is None  # no finished run: nothing to say


def test_status_shows_the_summary_and_a_level_per_finished_run() -> None:
    out = text(status_from_experiments(RUNS, metric="val_bpb", direction=Direction.MINIMIZE,
                                       now=100.0))
    assert "isolation: bwrap (2 runs), none (1 run)" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.strip().startswith("│")
            and len(line.split()) > 2}
    assert "bwrap" in rows["b1"] and "none" in rows["c1"]


def test_report_lists_each_run_with_its_level() -> None:
    data = collect(RUNS, metric="val_bpb", now=100.0)
    md = render_markdown(data)
    assert "- Sandbox (isolation: bwrap (2 runs), none (1 run), - (1 run))" in md
    assert "| c1 | candidate | 0 | 0.9 | none |" in md
    html = render_html(data)
    assert '<section id="runs"><h2>Runs (4 finished)</h2>' in html and "<td>bwrap</td>" in html

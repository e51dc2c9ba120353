"""``autolab status`` and ``autolab report`` on a real lab (a git repo made by ``Lab.init``)
whose experiment records and parquet metrics are on disk, through the real CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import attrs
from click.testing import CliRunner
from rich.console import Console

from autolab.cli import main
from autolab.metrics.parquet_store import ParquetMetricStore
from autolab.reporting.lab import budget_usage, lab_status, llm_spend, write_lab_report
from autolab.reporting.synthetic import synthetic_curve, synthetic_lab
from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus, StatusEvent
from autolab_core.testing import make_context

CONFIG = """
[lab]
name = "toy"

[run]
command = "python train.py"
eval_command = "python eval.py"

[budget]
usd = 20.0
llm_usd = 5.0
max_experiments = 50
"""


def make_lab(root: Path) -> Lab:
    lab = Lab.init(root, CONFIG)
    now = time.time()
    experiments = synthetic_lab(40, slots=2, seed=4, start=now - 3 * 3600)
    store = ParquetMetricStore({}, make_context(lab.root, "toy"))
    for e in experiments:
        if e.status is ExperimentStatus.STARTED:  # still running: make them recent
            e = attrs.evolve(e, history=(StatusEvent(ExperimentStatus.STARTED, now - 60),))
        lab.save_experiment(e)
        store.append(synthetic_curve(e, 30, ("train_loss", "tok_per_s")))
    flagged = attrs.evolve(experiments[3], flags=("divergence: loss tripled at step 400",))
    lab.save_experiment(flagged)
    store.close()
    conv = lab.state_dir / "conversations"
    conv.mkdir()
    (conv / "a.json").write_text(json.dumps({"calls": [{"usage": {"cost_usd": 0.25}}],
                                             "followups": {"w": {"calls": [
                                                 {"usage": {"cost_usd": 0.5}}]}}}))
    return lab


def test_status_and_report_commands_on_a_lab(tmp_path: Path) -> None:
    lab = make_lab(tmp_path / "lab")
    runner = CliRunner()
    status = runner.invoke(main, ["status", "--lab", str(lab.root)], terminal_width=200)
    assert status.exit_code == 0, status.output
    assert "41 experiments" not in status.output and "40 experiments" in status.output
    assert "running (2)" in status.output and "train_loss" in status.output
    assert "$0.75" in status.output and "$5.00" in status.output  # LLM money from records
    assert "divergence" in status.output and "loss tripled" in status.output

    out = tmp_path / "report"
    report = runner.invoke(main, ["report", "--lab", str(lab.root), "--out", str(out)])
    assert report.exit_code == 0, report.output
    written = {Path(p).name for p in report.output.split()}
    assert {"report.md", "report.html"} <= written
    html = (out / "report.html").read_text()
    assert 'id="gantt-svg"' in html and "<polyline" in html and "loss tripled" in html
    assert "# autolab: toy" in (out / "report.md").read_text()


def test_budget_usage_and_llm_spend(tmp_path: Path) -> None:
    lab = make_lab(tmp_path / "lab")
    experiments = lab.load_experiments()
    usage = budget_usage(lab, experiments, now=time.time())
    assert usage.usd_limit == 20.0 and usage.llm_usd_limit == 5.0
    assert usage.llm_usd == llm_spend(lab.state_dir / "conversations") == 0.75
    assert usage.experiments == sum(1 for e in experiments if e.role == "candidate")
    assert usage.experiments_limit == 50 and usage.seconds > 3600


def test_lab_views_take_the_store_from_the_caller(tmp_path: Path) -> None:
    """Without a store the pages still render (no live metrics, no curves); with one, the
    caller's store is read and left open for the caller to close."""
    lab = make_lab(tmp_path / "lab")
    out = Console(record=True, width=200, color_system=None)
    out.print(lab_status(lab))
    text = out.export_text()
    assert "running (2)" in text and "train_loss" not in text
    store = ParquetMetricStore({}, make_context(lab.root, "toy"))
    out.print(lab_status(lab, store))
    assert "train_loss" in out.export_text()
    paths = write_lab_report(lab, tmp_path / "r", store, png=False)

    def curves(html: str) -> str:
        return html[html.index('id="curves"'):html.index('id="gantt"')]

    assert "<polyline" in curves((tmp_path / "r" / "report.html").read_text())
    assert store.query(None, ["train_loss"]).num_rows > 0  # still open
    store.close()
    bare = write_lab_report(lab, tmp_path / "bare", None, png=False)
    assert [p.name for p in bare] == [p.name for p in paths] == ["report.md", "report.html"]
    assert "<polyline" not in curves((tmp_path / "bare" / "report.html").read_text())

"""What ``autolab run`` prints at the end and keeps live, on a real lab (``Lab.init``) and a
real rich Console."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
from rich.console import Console

from autolab.reporting.console import live_table, print_summary
from autolab.reporting.synthetic import synthetic_lab
from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus, StatusEvent

CONFIG = '[lab]\nname = "toy"\n\n[run]\ncommand = "python train.py"\neval_command = "python eval.py"\n'


def console() -> Console:
    return Console(record=True, width=160, color_system=None)


def test_end_of_run_summary_of_ten_thousand_experiments_is_bounded(tmp_path: Path) -> None:
    lab = Lab.init(tmp_path / "lab", CONFIG)
    experiments = synthetic_lab(10_000, slots=8, seed=5, id_format="{:04d}")
    since = experiments[-120].history[0].at
    out = console()
    print_summary(lab, experiments, out, since=since, top=10, max_rows=40)
    text = out.export_text()
    assert len(text.splitlines()) < 150  # not a row per experiment
    assert "runs this session" in text and "(10000 in the lab)" in text
    assert "leaderboard: top 10" in text and re.search(r"earlier experiments of this session",
                                                       text)
    session = text[:text.index("leaderboard: top")]
    ids = re.findall(r"^│ (\d{4,5}) ", session, flags=re.M)
    assert len(ids) == 40 and ids[-1] == "10000"
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)  # 10000 after 9999
    assert f"main is {lab.main_commit()[:12]}" in text


class Loop:
    """The two reads ``live_table`` makes of the run loop, over a fixed list."""

    def __init__(self, experiments: list) -> None:
        self._exps = experiments

    def experiments(self) -> list:
        return self._exps

    def running(self) -> list:
        return [e for e in self._exps
                if e.status in (ExperimentStatus.SUBMITTED, ExperimentStatus.STARTED)]


def test_live_table_says_why_a_submitted_job_waits() -> None:
    base = synthetic_lab(3, slots=1, seed=1, id_format="{:04d}")[0]
    waiting = attrs.evolve(base, id="10000", reason="Resources",
                           history=(StatusEvent(ExperimentStatus.SUBMITTED, 1.0),))
    quiet = attrs.evolve(base, id="9999", history=(StatusEvent(ExperimentStatus.SUBMITTED, 1.0),))
    out = console()
    out.print(live_table(Loop([waiting, quiet])))
    text = out.export_text()
    assert "running: 2" in text and "waiting: Resources" in text
    assert text.index("9999") < text.index("10000")

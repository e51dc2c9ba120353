"""Money and commands of the ``hf-jobs`` backend: budget reservations under concurrent
submits (threads and processes), ``autolab cost`` before anything is submitted, ``autolab
cancel --all`` and ``autolab clean``, against the strict local stand-in of the Hub
(:mod:`hf_fake_hub`, written from ``huggingface_hub``'s client code; nothing is mocked).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hf_fake_hub import FakeHub
from test_hf_jobs_hardening import hub, make

from autolab.run.budget import Budget, OverBudget, submit_within_budget
from autolab_core.errors import BackendError
from autolab_core.models import JobSpec, JobStatus
from autolab_core.testing import wait_for

__all__ = ["hub"]  # the fixture


# -- budget reservations ---------------------------------------------------------------------
def test_budget_reservations_hold_under_concurrent_threads_and_processes(tmp_path: Path) -> None:
    budget = Budget(1.0, tmp_path / "threads.json")
    barrier, won = threading.Barrier(12), []

    def reserve(i: int) -> None:
        barrier.wait()
        try:
            budget.reserve(f"t{i}", 0.3)
            won.append(i)
        except OverBudget as exc:
            assert "over budget" in str(exc)

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 3 and budget.totals()["reserved"] == pytest.approx(0.9)
    budget.settle(f"t{won[0]}", 0.05)  # a job ended cheaper than estimated: money comes back
    budget.reserve("after", 0.3)
    assert budget.totals()["spent"] == pytest.approx(0.05)

    # Six processes wait for one start signal, then each tries to reserve $0.30 of $1.00.
    go = tmp_path / "go"
    code = ("import sys, time, pathlib\nfrom autolab.run.budget import Budget, OverBudget\n"
            "go = pathlib.Path(sys.argv[1])\nwhile not go.exists(): time.sleep(0.01)\n"
            "try:\n    Budget(1.0, pathlib.Path(sys.argv[2])).reserve(sys.argv[3], 0.3)\n"
            "    print('won')\nexcept OverBudget:\n    print('refused')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(go), str(tmp_path / "procs.json"),
                               f"p{i}"], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(6)]
    time.sleep(1.0)  # let them start (not a timing assert: the outcome holds either way)
    go.touch()
    outcomes = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(outcomes) == ["refused"] * 3 + ["won"] * 3, outcomes


def test_concurrent_submits_never_overspend(hub: FakeHub, tmp_path: Path) -> None:
    """$1/h flavor, 10 min limit + 0 setup = $0.1667 each; $0.40 pays for two jobs only."""
    backend = make(hub, tmp_path, flavor="a10g-small", setup_timeout=0)
    budget = Budget(0.40, tmp_path / "budget.json")
    barrier, handles, refused = threading.Barrier(5), [], []

    def submit(i: int) -> None:
        spec = JobSpec(f"c{i}", ("python", "-c", "print(1)"), str(tmp_path), time_limit_s=600)
        barrier.wait()
        try:
            handles.append(submit_within_budget(budget, backend, spec))
        except OverBudget:
            refused.append(i)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(handles) == 2 and len(refused) == 3 and len(hub.jobs) == 2
    with pytest.raises(BackendError):  # a failed submission gives its reservation back
        submit_within_budget(Budget(10.0, tmp_path / "b2.json"), backend,
                             JobSpec("bad", ("true",), str(tmp_path), time_limit_s=60,
                                     resources={"flavor": "z100"}))
    assert Budget(10.0, tmp_path / "b2.json").totals()["reserved"] == 0


# -- commands --------------------------------------------------------------------------------
def test_cancel_all_and_clean_commands(hub: FakeHub, tmp_path: Path) -> None:
    from autolab.commands.cancel import cancel
    from autolab.commands.clean import clean
    from autolab_core.lab import Lab

    root = tmp_path / "lab"
    root.mkdir()
    (root / "train.py").write_text("print(1)\n")
    config = ('[lab]\nname = "lab"\n\n[run]\ncommand = "python train.py"\n\n[metric]\n'
              'name = "m"\nsource = "pattern"\npattern = "m=(\\\\S+)"\n\n[backend]\n'
              f'name = "hf-jobs"\n\n[backend.hf-jobs]\nendpoint = "{hub.url}"\n')
    Lab.init(root, config_text=config)
    backend = make(hub, tmp_path)
    sleeping = [backend.submit(JobSpec(f"s{i}", ("python", "-c", "import time; time.sleep(60)"),
                                       str(tmp_path))) for i in range(2)]
    result = CliRunner().invoke(cancel, ["--lab", str(root), "--all"])
    assert result.exit_code == 0, result.output
    assert "cancelled 2" in result.output
    for handle in sleeping:
        assert wait_for(backend, handle, timeout=30).status is JobStatus.CANCELLED
    result = CliRunner().invoke(cancel, ["--lab", str(root)])
    assert result.exit_code == 2 and "--all" in result.output
    result = CliRunner().invoke(clean, ["--lab", str(root), "--all"])
    assert result.exit_code == 0 and "deleted 0 code archive" in result.output, result.output


def test_cost_is_shown_before_anything_is_submitted(hub: FakeHub, tmp_path: Path) -> None:
    from autolab.commands.cost import cost
    from autolab_core.lab import Lab

    root = tmp_path / "lab"
    root.mkdir()
    (root / "train.py").write_text("print(1)\n")
    Lab.init(root, config_text=(
        '[lab]\nname = "lab"\n\n[run]\ncommand = "python train.py"\ntime_limit = "45m"\n\n'
        '[metric]\nname = "m"\nsource = "pattern"\npattern = "m=(\\\\S+)"\n\n[budget]\nusd = 5.5\n\n'
        f'[backend]\nname = "hf-jobs"\n\n[backend.hf-jobs]\nendpoint = "{hub.url}"\n'
        'flavor = "a10g-small"\n'))
    result = CliRunner().invoke(cost, ["--lab", str(root)])
    # a10g-small $1.00/h: 45 min + 15 min setup allowance = $1.00; $5.50 pays for 5.
    assert result.exit_code == 0, result.output
    assert "at most $1.00" in result.output and "at least 5 such job" in result.output
    result = CliRunner().invoke(cost, ["--lab", str(root), "--flavor", "h200"])
    assert "at most $5.00" in result.output, result.output
    assert hub.jobs == {} and not hub.repos

"""Settings resolved once: command line over autolab.toml over defaults, with the source shown
in ``autolab run``'s header; ``autolab approve`` builds no backend, store or LLM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runfixtures import baselines, candidate, finished
from toylab import make_toy_lab

from autolab.run.ledger import Ledger
from autolab.run.promotion import Promotion
from autolab.run.settings import resolve
from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus
from autolab_core.vocab import Role, Verdict

TOML_WORKERS = "\n[backend.local]\nworkers = 2\n\n[budget]\nmax_experiments = 1\n"


def autolab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autolab", *args], capture_output=True,
                          text=True, timeout=600)


def test_command_line_over_toml_over_defaults(tmp_path: Path) -> None:
    lab = make_toy_lab(tmp_path / "lab", extra_config=TOML_WORKERS)
    s = resolve(lab.config)
    assert (s.workers.value, s.workers.source) == (2, "toml [backend.local] workers")
    assert (s.max_experiments.value, s.max_experiments.source) == (1, "toml [budget] max_experiments")
    assert (s.on_stop.value, s.on_stop.source) == ("finish", "default")
    assert (s.strategy.value, s.strategy.source) == ("auto", "default")
    assert s.backend.source == "toml [backend] name"
    s = resolve(lab.config, workers=3, time_limit="2m", on_stop="detach", strategy="random")
    assert (s.workers.value, s.workers.source) == (3, "cli")
    assert (s.time.value, s.time.source) == (120.0, "cli")
    assert s.options().workers == 3 and s.options().on_stop == "detach"
    plain = make_toy_lab(tmp_path / "plain")
    s = resolve(plain.config, defaults={"workers": 2, "time_limit": "12m"})
    assert (s.workers.value, s.workers.source) == (2, "default")
    assert s.time.value == 720.0
    assert resolve(plain.config).workers.value is None  # the backend decides
    assert "  workers         1 (default: the backend's own)" in resolve(plain.config).header(1)


def test_toml_workers_are_honoured_by_autolab_run(tmp_path: Path) -> None:
    """Through the CLI: no --workers, `[backend.local] workers = 2` gives two local slots."""
    lab = make_toy_lab(tmp_path / "lab", extra_config=TOML_WORKERS)
    done = autolab("run", "--lab", str(lab.root))
    assert done.returncode == 0, done.stderr
    assert "workers         2 (toml [backend.local] workers)" in done.stdout, done.stdout
    assert "max experiments 1 (toml [budget] max_experiments)" in done.stdout
    assert "on stop         finish (default)" in done.stdout
    slots = {e.slot for e in Lab(lab.root).load_experiments() if e.handle is not None}
    assert slots == {"local-0", "local-1"}
    assert "--workers" in autolab("run", "--help").stdout


def test_approve_builds_no_backend_store_or_llm(tmp_path: Path) -> None:
    """`autolab approve` on a lab whose backend, metric store and LLM cannot be built."""
    lab = make_toy_lab(tmp_path / "lab")
    ledger = Ledger(lab, say=print)
    baselines(ledger, [1.0, 1.01, 0.99])
    cand = candidate(ledger, 0.8, flags=("stall: no progress for 30 s",))
    Promotion(ledger).judge()
    for exp in ledger.experiments():
        if exp.role == Role.CONFIRM and exp.status is ExperimentStatus.QUEUED:
            ledger.put(finished(exp, 0.8))
    Promotion(ledger).judge()
    assert ledger.get(cand.id).verdict == Verdict.NEEDS_REVIEW  # type: ignore[union-attr]
    toml = (lab.root / "autolab.toml").read_text().replace('name = "local"', 'name = "gone"')
    toml += '\n[metrics]\nstore = "gone-too"\n\n[llm]\nname = "unreachable"\n'
    (lab.root / "autolab.toml").write_text(toml)
    subprocess.run(["git", "-C", str(lab.root), "commit", "-qam", "plugins gone"], check=True)
    done = autolab("approve", "--lab", str(lab.root), cand.id)
    assert done.returncode == 0, done.stderr
    assert "LR = 0.02" in lab.read(lab.main_commit(), "train.py")
    assert "promoted" in done.stdout

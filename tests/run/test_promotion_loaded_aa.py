"""A/A on a loaded machine, through the real loop (local backend, runner, gate) on a small CPU
lab: honest candidates that do not change the computation run while a CPU hog competes for the
cores. None of the no-op ones may be promoted, and the one real win (a learning rate that the
protected evaluation rewards, same compute) must be promoted, not held back for cost.

The lab is the toy lab (tests/toylab.py) whose training also does a fixed amount of numpy
matrix work (the same for every candidate), so that CPU seconds per run are large enough for the
compute rule to see (``min_cost_seconds`` is lowered to match). The hog is two busy Python
processes that start once main's noise is calibrated on the idle machine and last until the
session ends (they stop by themselves after ``HOG_S`` at most): every candidate runs loaded,
which against the calibration alone looks like 10-25% more CPU per run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from toylab import make_toy_lab

from autolab.run import gate
from autolab.run.assemble import build_loop
from autolab.run.loop import RunOptions
from autolab.run.promotion import Promotion
from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus, Hypothesis
from autolab_core.vocab import Role, Verdict

HOG_S = 60.0
WORK = '''import numpy as _np
_m = _np.random.default_rng(0).standard_normal((200, 200))
for _ in range(40):
    _m = _np.tanh(_m @ _m / 200)
SEED = int'''
# (old, new) edits of train.py: none changes what is computed, except the last, a real win.
NO_OPS = [("WIDTH = 8  # hidden width", "WIDTH = 8  # hidden width (kept)"),
          ('ACT = "relu"', 'ACT = "gelu"'),  # never read by the computation
          ("USE_BIAS = True", "USE_BIAS = False"),
          ("import json, os, pathlib", "import os, json, pathlib")]
WIN = ("LR = 0.01", "LR = 0.02")


class Edits:
    """A Researcher and Worker that propose prepared single edits of ``train.py``."""

    def __init__(self, edits: list[tuple[str, str]]) -> None:
        self.edits = list(edits)

    def propose(self, digest: object, n: int) -> list[Hypothesis]:
        out = []
        while self.edits and len(out) < n:
            old, new = self.edits.pop(0)
            out.append(Hypothesis(id=new, title=f"{old} -> {new}", source="llm",
                                  edits=({"file": "train.py", "old": old, "new": new},)))
        return out

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        edit = hypothesis.edits[0]
        return {"train.py": files["train.py"].replace(edit["old"], edit["new"])}


def cpu_lab(root: Path) -> Lab:
    lab = make_toy_lab(root, noise=0.01)
    train = (lab.root / "train.py").read_text().replace("SEED = int", WORK)
    (lab.root / "train.py").write_text(train)
    toml = (lab.root / "autolab.toml").read_text().replace(
        "min_sigma = 0.005", "min_sigma = 0.005\nbaseline_every = 2\nmin_cost_seconds = 0.05")
    (lab.root / "autolab.toml").write_text(toml)
    subprocess.run(["git", "-C", str(lab.root), "commit", "-qam", "matrix work in training"],
                   check=True)
    return Lab(lab.root)


def test_honest_candidates_next_to_a_cpu_hog_are_neither_promoted_falsely_nor_held_for_cost(
        tmp_path: Path) -> None:
    lab = cpu_lab(tmp_path / "lab")
    loop = build_loop(lab, RunOptions(workers=2, poll_interval=0.1), say=print)
    loop.roles.proposer = loop.roles.writer = Edits([*NO_OPS[:2], WIN, *NO_OPS[2:]])
    hogs: list[subprocess.Popen[bytes]] = []
    hog_on: list[float] = []
    done = threading.Event()

    def hog_after_calibration() -> None:
        while not done.is_set():
            calibrated = [e for e in loop.ledger.experiments() if e.role == Role.BASELINE
                          and e.status is ExperimentStatus.FINISHED]
            if len(calibrated) >= 3:
                hog_on.append(time.time())
                busy = f"import time\nend = time.time() + {HOG_S}\nwhile time.time() < end: pass"
                hogs.extend(subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2))
                return
            done.wait(0.1)

    watcher = threading.Thread(target=hog_after_calibration, daemon=True)
    watcher.start()
    try:
        exps = loop.run()
    finally:
        done.set()
        watcher.join()
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert hog_on, "the session ended before main was calibrated"
    started = [e.at(ExperimentStatus.STARTED) or 0.0 for e in exps if e.role != Role.BASELINE]
    # Every candidate run but those that shared the slots with the calibration ran loaded.
    assert sum(hog_on[0] <= t <= hog_on[0] + HOG_S for t in started) >= len(started) - 2

    candidates = {e.hypothesis.title: e for e in exps if e.role == Role.CANDIDATE
                  and e.result is not None}
    win = candidates.pop(f"{WIN[0]} -> {WIN[1]}")
    assert win.verdict == Verdict.PROMOTED, win.reason
    assert len(candidates) >= len(NO_OPS)
    for cand in candidates.values():
        assert cand.verdict in (Verdict.NOT_BETTER, Verdict.NOT_CONFIRMED), (cand.id, cand.reason)
    assert not [e for e in exps if e.verdict == Verdict.NEEDS_EQUAL_COMPUTE]
    # main was measured again during the session, and its runs carry CPU seconds
    baselines = [e for e in exps if e.role == Role.BASELINE and e.result is not None]
    assert len(baselines) > 3 and all(e.result and "train_cpu_seconds" in e.result.extra
                                      for e in baselines)
    # The rule itself, on the real numbers of every honest candidate with more than one run
    # (the rule is applied to confirmed wins only: never to a single run).
    promotion = Promotion(loop.ledger)
    final = loop.ledger.experiments()
    for cand in [win, *candidates.values()]:
        runs = gate.runs_of(final, cand.id)
        if len(runs) > 1:
            assert promotion.cost_hold(cand, runs, final) is None, cand.id

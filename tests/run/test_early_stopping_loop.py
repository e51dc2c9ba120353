"""Early stopping through the real loop: a pruned candidate ends PRUNED, with its reason, and
no run is stopped once it has trained to the end (that saves nothing and loses its score)."""

from __future__ import annotations

from pathlib import Path

from toylab import CONFIG, PREPARE

from autolab.run.assemble import build_loop
from autolab.run.loop import RunOptions
from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus
from autolab_core.vocab import Role

STEPS = 12

# A slow toy: 12 logged steps of 0.4 s; the training loss is worse the further LR is from
# 0.04, so a candidate that halves LR lags its peers at every step. Two peers are enough: the
# first two baselines have finished when the first candidate starts (with three, whether the
# third baseline is ahead of the candidate at a given step is a race).
SLOW_TRAIN = f'''\
import json, math, os, pathlib, time
from autolab_core.metriclines import format_metric_line

LR = 0.01  # learning rate
WIDTH = 8  # hidden width

out = pathlib.Path(os.environ.get("AUTOLAB_OUTPUT_DIR", "out"))
out.mkdir(parents=True, exist_ok=True)
for step in range(1, {STEPS} + 1):
    time.sleep(0.4)
    loss = 2.0 / step + abs(math.log2(LR / 0.04))
    print(format_metric_line(step, {{"train_loss": loss}}), flush=True)
(out / "model.json").write_text(json.dumps({{"lr": LR, "width": WIDTH, "act": "relu"}}))
'''

REPORTER = """
[reporter]
early_stopping = "median"
min_steps = 3
min_peers = 2
smooth = 1
"""


def slow_lab(root: Path) -> Lab:
    root.mkdir(parents=True)
    (root / "train.py").write_text(SLOW_TRAIN)
    (root / "prepare.py").write_text(PREPARE.format(noise=0.01, flat=False))
    return Lab.init(root, config_text=CONFIG + REPORTER)


def test_a_lagging_candidate_is_pruned_mid_run_and_ends_pruned(tmp_path: Path) -> None:
    lab = slow_lab(tmp_path / "lab")
    loop = build_loop(lab, RunOptions(workers=2, poll_interval=0.05, max_experiments=3),
                      say=print)
    try:
        exps = loop.run()
    finally:
        loop.backend.close()
    pruned = [e for e in exps if e.status is ExperimentStatus.PRUNED]
    assert pruned, [(e.id, e.hypothesis.title, e.status, e.reason) for e in exps]
    for exp in pruned:
        assert exp.role == Role.CANDIDATE
        assert exp.reason is not None and exp.reason.startswith("pruned: median rule"), exp.reason
        steps = loop.jobs.store.query([exp.id], ["train_loss"]).column("step").to_pylist()
        assert steps and max(steps) < STEPS, "stopped after it had trained to the end"
    baselines = [e for e in exps if e.role == Role.BASELINE]
    assert baselines and all(e.status is ExperimentStatus.FINISHED for e in baselines)

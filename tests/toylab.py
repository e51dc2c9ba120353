"""A toy lab that trains in milliseconds, for tests of the loop (no torch).

``train.py`` (editable) "trains" by writing its knobs to ``model.json``; ``prepare.py``
(protected) scores that model: ``val_bpb = 1 + 0.1 * log2(LR / 0.04)^2 + noise(seed)``, so
doubling LR from 0.01 is a large, real win, and the seed (which the runner sets) only adds
noise of sigma ``NOISE``. ``flat=True`` makes every knob irrelevant (for A/A tests).
"""

from __future__ import annotations

from pathlib import Path

from autolab_core.lab import Lab

TRAIN = '''\
import json, os, pathlib
from autolab_core.metriclines import format_metric_line

LR = 0.01  # learning rate
WIDTH = 8  # hidden width
ACT = "relu"  # choices: relu, gelu
USE_BIAS = True

SEED = int(os.environ.get("AUTOLAB_SEED", "0"))
out = pathlib.Path(os.environ.get("AUTOLAB_OUTPUT_DIR", "out"))
out.mkdir(parents=True, exist_ok=True)
for step in range(0, 50, 10):
    print(format_metric_line(step, {"train_loss": 2.0 / (1 + step) + LR}), flush=True)
(out / "model.json").write_text(json.dumps({"lr": LR, "width": WIDTH, "act": ACT}))
'''

PREPARE = '''\
import json, math, os, pathlib, random, sys

NOISE = {noise}
FLAT = {flat}

if __name__ == "__main__" and sys.argv[1:] == ["eval"]:
    out = pathlib.Path(os.environ["AUTOLAB_OUTPUT_DIR"])
    model = json.loads((out / "model.json").read_text())
    seed = int(os.environ["AUTOLAB_SEED"])
    loss = 1.0 if FLAT else 1.0 + 0.1 * math.log2(model["lr"] / 0.04) ** 2
    loss += random.Random(seed).gauss(0, NOISE)
    (out / "result.json").write_text(json.dumps({{"val_bpb": loss, "eval_tokens": 100}}))
'''

CONFIG = '''\
[lab]
name = "toy"

[run]
command = "python train.py"
eval_command = "python prepare.py eval"
time_limit = "2m"

[metric]
name = "val_bpb"
direction = "minimize"
source = "eval"

[files]
editable = ["train.py"]
protected = ["prepare.py"]

[promotion]
noise_runs = 3
confirm_runs = 2
k_sigma = 2.0
min_sigma = 0.005

[search]
focus = ["LR"]

[backend]
name = "local"
'''


def make_toy_lab(root: Path, noise: float = 0.01, flat: bool = False,
                 extra_config: str = "") -> Lab:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text(PREPARE.format(noise=noise, flat=flat))
    return Lab.init(root, config_text=CONFIG + extra_config)

"""`autolab try` accepts every knob form by name, through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standins import git_repo, hydra_like, nanogpt_like

from autolab_core.lab import Lab

HYDRA_TOML = """\
[run]
command = "python train.py --eval-every=40 trainer.max_steps=120"
[metric]
name = "val_loss"
source = "pattern"
pattern = 'val_loss=([0-9.]+)'
[files]
editable = ["train.py", "conf/config.yaml", "conf/model/small.yaml"]
"""


def autolab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autolab", *args], cwd=cwd, env=os.environ,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def hydra_lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = git_repo(hydra_like(tmp_path_factory.mktemp("hydra")))
    (root / "autolab.toml").write_text(HYDRA_TOML)
    Lab.init(root)
    return root


def inbox(root: Path) -> list[dict[str, object]]:
    path = root / ".autolab" / "inbox.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["changes"] for line in lines]


def test_nested_keys_argparse_flags_and_short_names_are_accepted(hydra_lab: Path) -> None:
    done = autolab("try", "model.n_embd=16", "--seed=3", "lr=0.004", cwd=hydra_lab)
    assert done.returncode == 0, done.stderr
    assert inbox(hydra_lab)[-1] == {"model.n_embd": 16, "seed": 3, "optim.lr": 0.004}


@pytest.mark.parametrize(("change", "message"), [
    ("nope=1", "no knob 'nope'; the knobs found are: config, seed, eval_every, optim.lr,"),
    ("trainer.max_steps=5", "trainer.max_steps is set by [run] command (trainer.max_steps=120)"),
    ("--eval-every=10", "eval_every is set by [run] command (--eval-every=40)"),
    ("model.n_embd=wide", "model.n_embd is an integer (8); got 'wide'"),
    ("optim.lr=0.002", "optim.lr is already 0.002 on main"),
    ("lr", "write NAME=VALUE"),
])
def test_bad_ideas_are_refused_with_the_fix(hydra_lab: Path, change: str, message: str) -> None:
    before = inbox(hydra_lab)
    done = autolab("try", change, cwd=hydra_lab)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert inbox(hydra_lab) == before  # nothing queued


def test_a_lowercase_config_file_knob_is_accepted(tmp_path: Path) -> None:
    root = git_repo(nanogpt_like(tmp_path))
    (root / "autolab.toml").write_text(
        '[run]\ncommand = "python train.py config/train_tiny.py"\n[metric]\nname = "val_loss"\n'
        "source = \"pattern\"\npattern = 'val loss ([0-9.]+)'\n"
        '[files]\neditable = ["config/train_tiny.py"]\n')
    Lab.init(root)
    done = autolab("try", "learning_rate=0.002", cwd=root)
    assert done.returncode == 0, done.stderr
    assert inbox(root) == [{"learning_rate": 0.002}]

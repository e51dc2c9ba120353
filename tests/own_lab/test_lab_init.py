"""`autolab init` looks at the repository: entry point, knobs, probe, metric, safe commit.

Real git repositories and real subprocesses; the probe runs real scripts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from standins import git_repo, nanogpt_like

from autolab.lab_init import find_entry_point, init_lab, propose, render_config, why_skip
from autolab.lab_probe import guess_from_source, guess_metrics, pattern_for, probe
from autolab_core.config import load_config

OUTPUT = """\
Overriding config with config/train_tiny.py:
iter 0: loss 4.1000, time 12.31ms, mfu -100.00%
step 0: train loss 4.2000, val loss 4.3000
step 100: train loss 2.0010, val loss 2.1000
step 00050 | loss: 3.1 | lrm: 1.00
{"epoch": 2, "val_acc": 0.8, "lr": 0.1}
Epoch 1 | valid acc 0.81 | lr 0.1
val_loss=1.25 test/acc=0.5
---
val_bpb:          0.997900
training_seconds: 300.1
""".splitlines()


def test_metrics_are_recognised_in_every_common_format_with_their_last_value() -> None:
    guesses = {g.name: g for g in guess_metrics(OUTPUT)}
    assert set(guesses) == {"val_bpb", "val loss", "val_loss", "val_acc", "valid acc", "test/acc",
                            "loss", "train loss"}
    assert guesses["val loss"].last == 2.1 and guesses["val_acc"].last == 0.8
    assert guesses["val_acc"].direction == "maximize" and guesses["val loss"].direction == "minimize"
    assert guess_metrics(OUTPUT)[0].name == "val_bpb"  # held-out bits per byte first
    for guess in guesses.values():  # each pattern reads its own numbers, the last one counts
        values = [float(m.group(1)) for line in OUTPUT if (m := re.search(guess.pattern, line))]
        assert values and values[-1] == guess.last, guess.name


def test_a_short_name_does_not_match_a_longer_one() -> None:
    pattern = pattern_for("loss")
    assert not re.search(pattern, "step 1: train loss 2.0, val loss 2.1")
    assert re.search(pattern, "iter 5: loss 1.5, time 3ms").group(1) == "1.5"  # type: ignore[union-attr]


def test_a_metric_is_guessed_from_the_source_without_running() -> None:
    guess = guess_from_source('print(f"step {it}: train loss {a:.4f}, val loss {b:.4f}")')
    assert guess is not None and guess.name == "val loss" and guess.last is None


def test_the_entry_point_is_found(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "model.py").write_text("x = 1\n")
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "experiment.py").write_text(
        "import argparse\nif __name__ == '__main__':\n    argparse.ArgumentParser()\n")
    assert find_entry_point(tmp_path) == "cli/experiment.py"
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train_gpt2.py").write_text("print(1)\n")
    assert find_entry_point(tmp_path) == "scripts/train_gpt2.py"
    (tmp_path / "main.py").write_text("print(1)\n")
    assert find_entry_point(tmp_path) == "main.py"


def test_the_probe_stops_at_its_time_limit_and_keeps_what_was_printed(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(
        "import time\nprint('step 1: val_loss: 1.5', flush=True)\ntime.sleep(600)\n")
    result = probe(tmp_path, [sys.executable, "train.py"], time_limit=3)
    assert result.returncode is None and result.lines == ("step 1: val_loss: 1.5",)
    assert guess_metrics(result.lines)[0].last == 1.5


def test_the_probe_never_sees_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_verysecretvalue123")
    (tmp_path / "train.py").write_text(
        "import os\nprint(os.environ.get('HF_TOKEN', 'none'), os.environ['AUTOLAB_SEED'])\n")
    result = probe(tmp_path, [sys.executable, "train.py"], time_limit=30)
    assert result.finished and result.lines == ("none 0",)


def test_the_proposal_for_a_nanogpt_repo_is_valid_and_names_the_knobs(tmp_path: Path) -> None:
    nanogpt_like(tmp_path)
    p = propose(tmp_path, run_probe=True, probe_seconds=60)
    assert p.command == ("python", "train.py", "config/train_tiny.py")
    assert p.editable == ("config/train_tiny.py",)
    assert p.metric is not None and p.metric.name == "val loss" and p.probe is not None
    text = render_config(tmp_path, p)
    (tmp_path / "autolab.toml").write_text(text)
    cfg = load_config(tmp_path)
    assert cfg.metric.source == "pattern" and cfg.metric.name == "val_loss"
    assert "#   learning_rate = 1e-3 (config/train_tiny.py:13, module)\n" in text
    assert "max_iters = 100 (config/train_tiny.py:14, module, compute: steps)  [not explored]" in text


def test_secrets_large_files_and_probe_output_are_never_committed(tmp_path: Path) -> None:
    nanogpt_like(tmp_path)
    git_repo(tmp_path)
    (tmp_path / ".env").write_text("WANDB_API_KEY=abc\n")
    (tmp_path / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "server.pem").write_text("x\n")
    (tmp_path / "notes.md").write_text("my token: hf_" + "a" * 34 + "\n")
    (tmp_path / "data.bin").write_bytes(b"\0" * (6 * 2**20))
    (tmp_path / "ignored.log").write_text("log\n")
    (tmp_path / ".gitignore").write_text("__pycache__/\n*.log\n")
    (tmp_path / "new_module.py").write_text("x = 1\n")
    said: list[str] = []
    lab = init_lab(tmp_path, run_probe=True, probe_seconds=60, say=said.append)
    tracked = subprocess.run(["git", "ls-tree", "-r", "--name-only", "main"], cwd=lab.root,
                             capture_output=True, text=True, check=True).stdout.split()
    assert "new_module.py" in tracked and "autolab.toml" in tracked
    for path in (".env", "id_rsa", "keys/server.pem", "notes.md", "data.bin", "ignored.log",
                 "out-tiny/ckpt.npz"):
        assert path not in tracked, path
    text = "\n".join(said)
    assert "not committed: .env (looks like a secret (name))" in text
    assert "not committed: notes.md (contains what looks like a token or key)" in text
    assert "not committed: data.bin (large file (6 MiB))" in text
    assert "not committed: out-tiny/ckpt.npz (written by the probe run)" in text
    assert "ignored.log" not in text  # git ignores it anyway: nothing to say


def test_an_existing_config_is_kept(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("LR = 0.1\nprint('val_loss: 1')\n")
    (tmp_path / "autolab.toml").write_text(
        '[metric]\nsource = "pattern"\npattern = "val_loss: (\\\\d+)"\nname = "val_loss"\n')
    said: list[str] = []
    init_lab(tmp_path, say=said.append)
    assert "autolab.toml exists: keeping it" in said[0]
    assert (tmp_path / "autolab.toml").read_text().startswith("[metric]")


def test_why_skip_reads_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "credentials.json").write_text("{}")
    (tmp_path / "cfg.py").write_text('API_KEY = "abcdefghijklmnop"\n')
    (tmp_path / "ok.py").write_text("lr = 0.1\n")
    (tmp_path / "mine.txt").write_text("value=s3cr3t-value-of-mine\n")
    assert why_skip(tmp_path, "credentials.json") == "looks like a secret (name)"
    assert why_skip(tmp_path, "cfg.py") == "contains what looks like a token or key"
    assert why_skip(tmp_path, "ok.py") is None
    assert why_skip(tmp_path, "mine.txt", ["s3cr3t-value-of-mine"]) is not None


def test_an_empty_folder_gets_a_valid_template(tmp_path: Path) -> None:
    said: list[str] = []
    lab = init_lab(tmp_path, say=said.append)
    assert lab.config.files.editable == ["train.py"]
    assert "metrics: none recognised; set [metric] pattern in autolab.toml" in said


def test_a_failing_probe_shows_its_last_lines(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("import torchvision_not_installed\n")
    said: list[str] = []
    init_lab(tmp_path, run_probe=True, probe_seconds=60, say=said.append)
    text = "\n".join(said)
    assert "probe: exited with code 1" in text
    assert "ModuleNotFoundError: No module named 'torchvision_not_installed'" in text


def test_a_small_training_config_is_chosen_and_the_others_are_named(tmp_path: Path) -> None:
    nanogpt_like(tmp_path)
    (tmp_path / "config" / "eval_gpt2.py").write_text("batch_size = 8\n")
    (tmp_path / "config" / "train_gpt2.py").write_text("batch_size = 12\n")
    p = propose(tmp_path)
    assert p.command == ("python", "train.py", "config/train_tiny.py")
    assert p.alternatives == ("config/train_gpt2.py", "config/eval_gpt2.py")
    assert "# Other config files (name one in [run] command and here instead): " \
           "config/train_gpt2.py, config/eval_gpt2.py" in render_config(tmp_path, p)

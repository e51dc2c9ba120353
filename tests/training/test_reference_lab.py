"""The reference CPU lab: real torch training in subprocesses, the protected evaluation, and
its guards (fixed eval context, causality check). Tiny step counts keep this under a minute.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from autolab.training import create_reference_lab, log, set_constants
from autolab_core.config import load_config
from autolab_core.metriclines import parse_metric_line

TINY = {"STEPS": 30, "WARMUP_STEPS": 5}


def _env(seed: int, out: Path) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
                AUTOLAB_SEED=str(seed), AUTOLAB_OUTPUT_DIR=str(out))


def _train_and_eval(lab: Path, seed: int) -> dict[str, object]:
    """Run ``train.py`` then ``prepare.py eval`` in ``lab``; the outputs and the result."""
    out = lab / "out"
    env = _env(seed, out)
    train = subprocess.run([sys.executable, "train.py"], cwd=lab, env=env, capture_output=True,
                           text=True, timeout=120)
    assert train.returncode == 0, train.stderr
    ev = subprocess.run([sys.executable, "-P", "prepare.py", "eval"], cwd=lab, env=env,
                        capture_output=True, text=True, timeout=120)
    return {"lab": lab, "train": train, "eval": ev,
            "result": json.loads((out / "result.json").read_text()) if ev.returncode == 0 else None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Four tiny trainings, two at a time (the machine has two cores)."""
    root = tmp_path_factory.mktemp("labs")
    configs = {
        "seed0": (TINY, 0),
        "seed0_again": (TINY, 0),
        "seed1": (TINY, 1),
        "seq32": ({**TINY, "SEQ_LEN": 32}, 0),
    }
    labs = {name: create_reference_lab(root / name, overrides=over)
            for name, (over, _) in configs.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_train_and_eval, labs[name], seed)
                   for name, (_, seed) in configs.items()}
        return {name: f.result() for name, f in futures.items()}


def _result(run: dict[str, object]) -> dict[str, object]:
    ev = run["eval"]
    assert isinstance(ev, subprocess.CompletedProcess)
    assert ev.returncode == 0, ev.stdout + ev.stderr
    result = run["result"]
    assert isinstance(result, dict)
    return result


def test_train_and_eval_writes_plausible_result(runs: dict[str, dict[str, object]]) -> None:
    result = _result(runs["seed0"])
    bpb = result["val_bpb"]
    assert isinstance(bpb, float) and math.isfinite(bpb)
    # 8 bits is a uniform guess over 256 bytes; 30 steps must already beat it clearly.
    assert 2.0 < bpb < 7.0, bpb
    assert result["causal"] is True and result["causal_max_diff"] <= 1e-4
    assert result["eval_context"] == 64
    assert result["eval_tokens"] == 65536
    train = runs["seed0"]["train"]
    assert isinstance(train, subprocess.CompletedProcess)
    metrics = [m for m in map(parse_metric_line, train.stdout.splitlines()) if m]
    assert [step for step, _ in metrics] == [25, 30]
    assert {"train_loss", "lr", "tok_per_s"} <= set(metrics[-1][1])


def test_fixed_seed_is_deterministic_and_seed_matters(
    runs: dict[str, dict[str, object]],
) -> None:
    a, again, other = (_result(runs[k])["val_bpb"] for k in ("seed0", "seed0_again", "seed1"))
    assert a == again  # bit-identical, not approximately equal
    assert a != other


def test_eval_context_does_not_follow_train_seq_len(runs: dict[str, dict[str, object]]) -> None:
    base, short = _result(runs["seed0"]), _result(runs["seq32"])
    lab = runs["seq32"]["lab"]
    assert isinstance(lab, Path)
    assert "SEQ_LEN = 32  #" in (lab / "train.py").read_text()
    assert short["eval_context"] == base["eval_context"] == 64
    assert short["eval_tokens"] == base["eval_tokens"]
    assert short["val_bpb"] != base["val_bpb"]


def test_causality_check_rejects_a_model_that_sees_the_future(tmp_path: Path) -> None:
    lab = create_reference_lab(tmp_path / "peek", overrides={"STEPS": 10, "WARMUP_STEPS": 2})
    train_py = lab / "train.py"
    source = train_py.read_text()
    assert source.count("is_causal=True") == 1
    train_py.write_text(source.replace("is_causal=True", "is_causal=False"))
    run = _train_and_eval(lab, 0)
    ev = run["eval"]
    assert isinstance(ev, subprocess.CompletedProcess)
    assert ev.returncode != 0
    assert "causality check FAILED" in ev.stderr
    assert not (lab / "out" / "result.json").exists()


def test_log_prints_a_parsable_metric_line(capsys: pytest.CaptureFixture[str]) -> None:
    log(7, train_loss=2.5, lr=0.01)
    parsed = parse_metric_line(capsys.readouterr().out.strip())
    assert parsed == (7, {"train_loss": 2.5, "lr": 0.01})


def test_importing_autolab_training_does_not_import_torch() -> None:
    code = "import sys, autolab.training; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_create_reference_lab_rewrites_literals_only(tmp_path: Path) -> None:
    lab = create_reference_lab(tmp_path / "lab", overrides={"STEPS": 200, "INIT_STD": 0.125,
                                                            "ACTIVATION": "relu"})
    text = (lab / "train.py").read_text()
    assert "STEPS = 200  #" in text and "INIT_STD = 0.125  #" in text
    assert "ACTIVATION = 'relu'  #" in text
    assert sorted(p.name for p in lab.iterdir()) == [
        "README.md", "autolab.toml", "data", "prepare.py", "train.py"]
    assert (lab / "data" / "val.bin").stat().st_size == 1024 * 65
    assert not (lab / ".git").exists()
    cfg = load_config(lab)
    assert cfg.metric.name == "val_bpb" and cfg.metric.source == "eval"
    assert cfg.files.protected == ["prepare.py"] and cfg.files.editable == ["train.py"]
    assert cfg.files.protected_data == ["data/val.bin"]
    assert cfg.run.eval_argv() == ("python", "-P", "prepare.py", "eval")
    with pytest.raises(ValueError, match="SEED"):
        set_constants(text, {"SEED": 3})
    with pytest.raises(ValueError, match="NOPE"):
        set_constants(text, {"NOPE": 3})


def test_shipped_corpus_is_the_built_shakespeare_text() -> None:
    """The package data decompresses to the exact text build-shakespeare-data.py makes."""
    import hashlib
    import importlib.resources
    import lzma

    packed = importlib.resources.files("autolab.training").joinpath("data/shakespeare.txt.xz")
    text = lzma.decompress(packed.read_bytes())
    assert len(text) == 5_058_390
    assert hashlib.sha256(text).hexdigest().startswith("b926c6ba9a94585a")
    assert text.count(b"\n==== ") == 41 and text.startswith(b"==== alls_well_that_ends_well")
    text.decode("ascii")


def test_eval_refuses_a_changed_held_out_file(tmp_path: Path) -> None:
    lab = create_reference_lab(tmp_path / "lab")
    out = lab / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"never loaded")
    val = lab / "data" / "val.bin"
    val.write_bytes(b" " * val.stat().st_size)  # easy text, same size
    ev = subprocess.run([sys.executable, "-P", "prepare.py", "eval"], cwd=lab, env=_env(0, out),
                        capture_output=True, text=True, timeout=120)
    assert ev.returncode != 0 and "data/val.bin was changed" in ev.stderr
    assert not (out / "result.json").exists()


def test_training_cannot_ask_prepare_for_the_validation_split(tmp_path: Path) -> None:
    lab = create_reference_lab(tmp_path / "lab")
    code = "import prepare; prepare.get_batch('val', 2, 8)"
    done = subprocess.run([sys.executable, "-c", code], cwd=lab, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "held out" in done.stderr

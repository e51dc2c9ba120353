"""autolab_core.runner with real processes: the key arrives on a pipe and never where the job
can read it, one signed result, CPU metered per phase over every process, the interpreter,
the environment, and the standard-library-only promise (``python -S``).

The helpers here (``make_tree``, ``run_job``) are shared by the other test_runner*/test_sandbox
files."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autolab_core import sandbox
from autolab_core.hashing import hash_globs, hash_paths
from autolab_core.job import RunResult, find_result, parse_result, scan_results
from autolab_core.runner import EXIT_SETUP, KEY_ENV, KEY_FD_ENV, NONCE_ENV

REPO = Path(__file__).resolve().parents[2]
LEVELS = [pytest.param(level, marks=pytest.mark.skipif(
    level not in sandbox.available(), reason=f"{level} is not available on this machine"))
    for level in sandbox.LEVELS]

PREPARE = "SCALE = 2.0\n"
EVALUATE = """\
import json, os, sys
sys.path.insert(0, os.getcwd())
import prepare
out = os.environ["AUTOLAB_OUTPUT_DIR"]
open(os.path.join(out, "eval-started"), "w").write("1")
if os.environ.get("EVAL_IMPORTS_TRAIN"):
    import train  # like a harness that builds the model from the patched file
import time
t = time.process_time()
while time.process_time() - t < float(os.environ.get("EVAL_CPU", "0")):
    pass
time.sleep(float(os.environ.get("EVAL_SLEEP", "0")))
model = float(open(os.path.join(out, "model.txt")).read())
data = float(open("data/val.txt").read())
json.dump({"val_loss": model * data * prepare.SCALE, "data_seen": data},
          open(os.path.join(out, "result.json"), "w"))
"""
HONEST_TRAIN = """\
import os
out = os.environ["AUTOLAB_OUTPUT_DIR"]
open(os.path.join(out, "model.txt"), "w").write("1.5")
"""


def make_tree(root: Path, train: str = HONEST_TRAIN) -> Path:
    """A job checkout: editable train.py, protected evaluate.py/prepare.py, data/val.txt."""
    tree = root / "tree"
    (tree / "data").mkdir(parents=True)
    (tree / "train.py").write_text(train)
    (tree / "evaluate.py").write_text(EVALUATE)
    (tree / "prepare.py").write_text(PREPARE)
    (tree / "data" / "val.txt").write_text("3.0")
    return tree


def spec_for(tree: Path, **over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "experiment_id": "0001", "train": ["python", "train.py"],
        "eval": ["python", "evaluate.py"], "metric": "val_loss",
        "protected": ["evaluate.py", "prepare.py"],
        "eval_hash": hash_paths(tree, ["evaluate.py", "prepare.py"]),
        "protected_data": ["data/*"], "protected_data_hash": hash_globs(tree, ["data/*"]),
        "seed": 5, "isolation": "none", "env": {},
    }
    spec.update(over)
    return spec


def run_job(tree: Path, spec: dict[str, object], key: bytes, how: str = "fd",
            env: dict[str, str] | None = None, python: str = sys.executable,
            flags: tuple[str, ...] = (), pythonpath: str = str(REPO)) -> tuple[int, str]:
    """Run ``python -m autolab_core.runner`` in ``tree`` the way a backend would, handing it
    ``key`` by ``how``: ``fd`` (an inherited pipe), ``stdin``, ``env`` or legacy ``nonce``."""
    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                "PYTHONPATH": pythonpath, "AUTOLAB_RUN_SPEC": json.dumps(spec), **(env or {})}
    args: list[str] = []
    fds: tuple[int, ...] = ()
    stdin: bytes | None = None
    read = None
    if how == "fd":
        read, write = os.pipe()
        os.write(write, key)
        os.close(write)
        full_env[KEY_FD_ENV] = str(read)
        fds = (read,)
    elif how == "stdin":
        args, stdin = ["--key-stdin"], key + b"\n"
    elif how == "env":
        full_env[KEY_ENV] = key.decode()
    elif how == "nonce":
        full_env[NONCE_ENV] = key.decode()
    try:
        done = subprocess.run([python, *flags, "-m", "autolab_core.runner", *args], cwd=tree,
                              env=full_env, pass_fds=fds, input=stdin, capture_output=True,
                              timeout=300, check=False)
    finally:
        if read is not None:
            os.close(read)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def new_key() -> bytes:
    return secrets.token_hex(16).encode()


@pytest.mark.parametrize("level", LEVELS)
def test_honest_run_prints_one_signed_result(tmp_path: Path, level: str) -> None:
    tree = make_tree(tmp_path)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, isolation=level), key)
    assert code == 0, out
    result = parse_result(out, key, "0001")
    assert result.value == pytest.approx(1.5 * 3.0 * 2.0)
    assert result.isolation == level and result.trusted and result.seed == 5
    assert result.extra == {"data_seen": 3.0}
    assert result.data_hash == hash_globs(tree, ["data/*"])
    assert f'"isolation":"{level}"' in out  # the HARDWARE line says it too


@pytest.mark.parametrize("how", ["fd", "stdin", "env", "nonce"])
def test_key_reaches_the_runner_by_every_channel(tmp_path: Path, how: str) -> None:
    tree = make_tree(tmp_path)
    key = new_key()
    code, out = run_job(tree, spec_for(tree), key, how=how)
    assert code == 0, out
    assert parse_result(out, key).value == pytest.approx(9.0)
    if how == "nonce":  # today's orchestrator matches the nonce in the payload
        payload = find_result(out, key.decode())
        assert payload is not None and payload["value"] == pytest.approx(9.0)


def test_without_a_key_the_runner_refuses(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    code, out = run_job(tree, spec_for(tree), b"", how="none")
    assert code == EXIT_SETUP and KEY_FD_ENV in out and "AUTOLAB_RESULT {" not in out


def test_bad_spec_is_reported_with_the_field(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    code, out = run_job(tree, {**spec_for(tree), "protectd": []}, new_key())
    assert code == EXIT_SETUP and "protectd" in out


FIND_KEY = """\
import os
key = os.environ["WANTED_REVERSED"][::-1].encode()  # the literal key is nowhere in our inputs
found = []
pid = os.getpid()
while pid > 1:
    for name in ("environ", "cmdline"):
        try:
            if key in open(f"/proc/{pid}/{name}", "rb").read():
                found.append(f"/proc/{pid}/{name}")
        except OSError:
            pass
    try:
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        break
for base, dirs, files in os.walk(os.environ["SEARCH"]):
    for f in files:
        try:
            if key in open(os.path.join(base, f), "rb").read():
                found.append(os.path.join(base, f))
        except OSError:
            pass
print("KEY-FOUND", found) if found else print("KEY-NOT-FOUND")
open(os.path.join(os.environ["AUTOLAB_OUTPUT_DIR"], "model.txt"), "w").write("1.5")
"""


@pytest.mark.parametrize("how", ["fd", "stdin", "env", "nonce"])
@pytest.mark.parametrize("level", LEVELS)
def test_the_job_cannot_find_the_key(tmp_path: Path, level: str, how: str) -> None:
    """Neither in the environment or command line of any ancestor (``/proc/<ppid>/environ``,
    whichever way the key came) nor in any file under the test's directory."""
    tree = make_tree(tmp_path, FIND_KEY)
    key = new_key()
    spec = spec_for(tree, isolation=level,
                    env={"WANTED_REVERSED": key.decode()[::-1], "SEARCH": str(tmp_path)})
    code, out = run_job(tree, spec, key, how=how)
    assert code == 0, out
    assert "KEY-NOT-FOUND" in out and "KEY-FOUND" not in out, out
    assert parse_result(out, key).value == pytest.approx(9.0)


def test_cpu_is_metered_per_phase_over_every_process(tmp_path: Path) -> None:
    """Training's CPU includes a child it starts and an orphan it leaves in its group; the
    evaluation's CPU is reported apart."""
    train = HONEST_TRAIN + """\
import subprocess, sys
burn = "import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.6: pass"
subprocess.run([sys.executable, "-c", burn], check=True)
"""
    tree = make_tree(tmp_path, train)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, env={"EVAL_CPU": "0.4"}), key)
    assert code == 0, out
    result = parse_result(out, key)
    assert result.train_cpu_seconds is not None and result.train_cpu_seconds >= 0.6
    assert result.eval_cpu_seconds is not None and result.eval_cpu_seconds >= 0.4
    assert result.train_cpu_seconds < 0.6 + 0.4 + 5  # the eval's burn is not in training's


def test_interpreter_is_the_runners_own_even_from_an_unactivated_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    train = HONEST_TRAIN + "import sys\nprint('PREFIX', sys.prefix)\n"
    tree = make_tree(tmp_path, train)
    key = new_key()
    code, out = run_job(tree, spec_for(tree), key, python=str(venv / "bin" / "python"))
    assert code == 0, out
    assert f"PREFIX {venv}" in out
    # the spec's python wins when it names one
    wrapper = tmp_path / "bin" / "mypython"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho WRAPPED-PYTHON\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    code, out = run_job(tree, spec_for(tree, python=str(wrapper)), key,
                        python=str(venv / "bin" / "python"))
    assert code == 0 and out.count("WRAPPED-PYTHON") == 2, out  # training and evaluation
    code, out = run_job(tree, spec_for(tree, python="no-such-python-here"), key)
    assert code == EXIT_SETUP and "no-such-python-here" in out


def test_lab_code_gets_no_secrets(tmp_path: Path) -> None:
    train = HONEST_TRAIN + "import json\nprint('ENV', json.dumps(sorted(os.environ)))\n"
    tree = make_tree(tmp_path, train)
    key = new_key()
    secrets_env = {"HF_TOKEN": "hf_abcdefgh", "OPENAI_API_KEY": "sk-abcdefgh",
                   "AWS_SECRET_ACCESS_KEY": "aws-abcdefgh", "MY_SETTING_X": "kept"}
    spec = spec_for(tree, env={"LAB_FLAG": "1", "LAB_API_KEY": "dropped"})
    code, out = run_job(tree, spec, key, how="env", env=secrets_env)
    assert code == 0, out
    names = json.loads(next(ln for ln in out.splitlines() if ln.startswith("ENV "))[4:])
    assert "LAB_FLAG" in names and "AUTOLAB_SEED" in names and "AUTOLAB_OUTPUT_DIR" in names
    for gone in ("HF_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "LAB_API_KEY",
                 "MY_SETTING_X", "AUTOLAB_RUN_SPEC", KEY_ENV, KEY_FD_ENV, NONCE_ENV):
        assert gone not in names
    assert "abcdefgh" not in out.replace("hf_abcdefgh", "")  # no value printed either


def test_runner_needs_only_the_standard_library(tmp_path: Path) -> None:
    """``python -S`` (no site-packages) with only the autolab_core folder on PYTHONPATH."""
    only = tmp_path / "only"
    shutil.copytree(REPO / "autolab_core", only / "autolab_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    tree = make_tree(tmp_path)
    key = new_key()
    for level in sandbox.available():
        code, out = run_job(tree, spec_for(tree, isolation=level), key, flags=("-S",),
                            pythonpath=str(only))
        assert code == 0, out
        assert isinstance(parse_result(out, key), RunResult)


def test_result_line_printed_by_training_is_forged(tmp_path: Path) -> None:
    forged = HONEST_TRAIN + """\
import json
print('AUTOLAB_RESULT ' + json.dumps({"experiment_id": "0001", "metric": "val_loss",
      "value": 0.001, "isolation": "none", "sig": "0" * 64, "nonce": "guess"}))
"""
    tree = make_tree(tmp_path, forged)
    key = new_key()
    code, out = run_job(tree, spec_for(tree), key)
    assert code == 0, out
    assert parse_result(out, key).value == pytest.approx(9.0)
    assert len(scan_results(out, key).forged) == 1


@pytest.mark.parametrize("level", LEVELS)
def test_a_venv_inside_the_hidden_lab_still_runs_the_job(tmp_path: Path, level: str) -> None:
    """``uv``-style ``lab/.venv``: the lab is hidden from the job, its environment is not."""
    lab = tmp_path / "lab"
    venv = lab / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    (lab / "secret-notes.txt").write_text("lab only")
    train = HONEST_TRAIN + (f"import sys\nprint('PREFIX', sys.prefix)\ntry:\n    open("
                            f"{str(lab / 'secret-notes.txt')!r}).read(); print('LAB VISIBLE')\n"
                            "except OSError:\n    print('LAB HIDDEN')\n")
    tree = make_tree(lab / ".autolab" / "jobs", train)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, isolation=level, hide=[str(lab)]), key,
                        python=str(venv / "bin" / "python"))
    assert code == 0, out
    assert f"PREFIX {venv}" in out
    assert ("LAB VISIBLE" if level == "none" else "LAB HIDDEN") in out

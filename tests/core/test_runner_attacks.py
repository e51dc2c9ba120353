"""Patches that attack the runner, as real processes: a detached daemon that swaps the
evaluation code while it runs, patch code inside the evaluation that rewrites a protected file,
training that rewrites (or rewrites and restores) the evaluation data, or reads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_runner import HONEST_TRAIN, LEVELS, PREPARE, make_tree, new_key, run_job, spec_for

from autolab_core.job import ResultError, parse_result
from autolab_core.runner import EXIT_PROTECTED

DAEMON_TRAIN = HONEST_TRAIN + """\
import os, subprocess, sys
daemon = '''
import os, time
out = os.environ["AUTOLAB_OUTPUT_DIR"]
open(os.path.join(out, "daemon.pid"), "w").write(str(os.getpid()))
for _ in range(600):  # wait for the protected evaluation to start, then swap its code
    if os.path.exists(os.path.join(out, "eval-started")):
        try:
            open("prepare.py", "w").write("SCALE = 0.0001\\\\n")
            open(os.path.join(out, "swapped"), "w").write("1")
        except OSError as exc:
            open(os.path.join(out, "swap-refused"), "w").write(str(exc))
        break
    time.sleep(0.05)
'''
if os.fork() == 0:  # double fork + setsid: the classic detached daemon
    os.setsid()
    subprocess.Popen([sys.executable, "-c", daemon], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    os._exit(0)
os.wait()
import time
while not os.path.exists(os.path.join(out, "daemon.pid")):
    time.sleep(0.05)
"""


def _daemons_running(marker: str) -> list[int]:
    """Live processes (seen from here, whatever PID namespace they are in) whose command line
    holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


@pytest.mark.parametrize("level", LEVELS)
def test_daemon_started_by_training_does_not_outlive_it(tmp_path: Path, level: str) -> None:
    tree = make_tree(tmp_path, DAEMON_TRAIN)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, isolation=level, env={"EVAL_SLEEP": "1"}), key)
    out_dir = tree / ".autolab-out"
    assert (out_dir / "daemon.pid").exists(), out  # it did start
    assert not _daemons_running("wait for the protected evaluation"), "the daemon outlived the run"
    assert not (out_dir / "swapped").exists()
    assert (tree / "prepare.py").read_text() == PREPARE
    if level == "bwrap":  # the PID namespace took the daemon down with training
        assert code == 0 and parse_result(out, key).value == pytest.approx(9.0), out
    else:  # the runner found it outside the job's process group, killed it, failed the run
        assert code == EXIT_PROTECTED and "detached process" in out, out
        with pytest.raises(ResultError):
            parse_result(out, key)


INSIDE_EVAL_TRAIN = HONEST_TRAIN + """\
import sys
if sys.argv[0].endswith("evaluate.py"):  # imported by the evaluation: rewrite its helper
    try:
        open("prepare.py", "w").write("SCALE = 0.0001\\n")
        print("REWROTE prepare.py")
    except OSError as exc:
        print("REWRITE REFUSED", type(exc).__name__)
"""


def test_protected_file_rewritten_during_the_evaluation_fails_the_run(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, INSIDE_EVAL_TRAIN)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, env={"EVAL_IMPORTS_TRAIN": "1"}), key)
    assert "REWROTE prepare.py" in out
    assert code == EXIT_PROTECTED and "modified during the evaluation" in out, out
    with pytest.raises(ResultError):
        parse_result(out, key)


@pytest.mark.parametrize("level", [p for p in LEVELS if p.values[0] != "none"])
def test_sandbox_refuses_the_rewrite_and_the_score_is_honest(tmp_path: Path, level: str) -> None:
    tree = make_tree(tmp_path, INSIDE_EVAL_TRAIN)
    key = new_key()
    spec = spec_for(tree, isolation=level, env={"EVAL_IMPORTS_TRAIN": "1"})
    code, out = run_job(tree, spec, key)
    assert code == 0 and "REWRITE REFUSED" in out, out
    assert parse_result(out, key).value == pytest.approx(9.0)
    assert (tree / "prepare.py").read_text() == PREPARE


DATA_TRAIN = HONEST_TRAIN + """\
mode = os.environ["DATA_ATTACK"]
try:
    seen = open("data/val.txt").read()
except OSError as exc:
    seen = "unreadable " + type(exc).__name__
print("TRAINING SAW DATA", repr(seen))
try:
    open("data/val.txt", "w").write("0.0001")
    if mode == "restore":
        open("data/val.txt", "w").write("3.0")
    print("DATA WRITTEN")
except OSError as exc:
    print("DATA WRITE REFUSED", type(exc).__name__)
"""


def test_evaluation_data_modified_by_training_fails_the_run(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, DATA_TRAIN)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, env={"DATA_ATTACK": "keep"}), key)
    assert "DATA WRITTEN" in out
    assert code == EXIT_PROTECTED and "evaluation data differs" in out and "after training" in out


def test_evaluation_data_modified_and_restored_is_scored_on_the_real_data(tmp_path: Path) -> None:
    """Without a sandbox training can touch the data, but nothing of it runs during the
    evaluation, so what the evaluation reads is what was pinned."""
    tree = make_tree(tmp_path, DATA_TRAIN)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, env={"DATA_ATTACK": "restore"}), key)
    assert code == 0, out
    assert parse_result(out, key).extra == {"data_seen": 3.0}


@pytest.mark.parametrize("level", [p for p in LEVELS if p.values[0] != "none"])
def test_sandboxed_training_can_neither_read_nor_write_the_evaluation_data(
        tmp_path: Path, level: str) -> None:
    tree = make_tree(tmp_path, DATA_TRAIN)
    key = new_key()
    code, out = run_job(tree, spec_for(tree, isolation=level, env={"DATA_ATTACK": "keep"}), key)
    seen = next(ln for ln in out.splitlines() if ln.startswith("TRAINING SAW DATA"))
    assert "3.0" not in seen, seen  # hidden: empty under bwrap, unreadable under Landlock
    if level == "bwrap":
        assert code == 0, out
        assert "DATA WRITE REFUSED" in out
        assert (tree / "data" / "val.txt").read_text() == "3.0"
        assert parse_result(out, key).extra == {"data_seen": 3.0}
    else:  # Landlock lets the job's tree be written around the data: the pinned hash fails it
        assert code != 0 and "protected evaluation data differs" in out, out
        assert "AUTOLAB_RESULT" not in out


def test_sandboxed_training_writes_its_own_tree_but_not_outside_nor_protected_files(
        tmp_path: Path) -> None:
    """Real training writes checkpoints and logs next to itself: the job's own tree (a
    disposable export) is writable, the rest of the machine is not, and a protected file is
    either read-only (bubblewrap) or its change fails the run (Landlock, by the hash check)."""
    escape = tmp_path / "outside.txt"
    train = HONEST_TRAIN + f"""\
import os
os.makedirs("out-ckpt", exist_ok=True)
for path in ({str(escape)!r}, "out-ckpt/ckpt.txt", "prepare.py"):
    try:
        open(path, "a").write("x")
        print("WROTE", path)
    except OSError:
        print("REFUSED", path)
"""
    for level in [str(p.values[0]) for p in LEVELS if p.values[0] != "none"]:
        tree = make_tree(tmp_path / level, train)
        code, out = run_job(tree, spec_for(tree, isolation=level), new_key())
        assert f"REFUSED {escape}" in out, (level, out)
        assert "WROTE out-ckpt/ckpt.txt" in out, (level, out)
        if level == "bwrap":
            assert code == 0 and "REFUSED prepare.py" in out, (level, out)
        else:  # Landlock cannot forbid a file inside a granted folder: the hash check fails it
            assert code != 0 and "modified the protected evaluation files" in out, (level, out)
    assert not escape.exists()


def test_a_stopped_runner_takes_the_whole_job_with_it(tmp_path: Path) -> None:
    """A backend's time limit or cancel sends SIGTERM to the runner: training, its children
    and a detached daemon all go, and no result is printed."""
    import json
    import signal
    import subprocess
    import sys
    import time

    train = DAEMON_TRAIN + """\
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # child-of-training"])
open(os.path.join(out, "training-started"), "w").write("1")
time.sleep(600)
"""
    tree = make_tree(tmp_path, train)
    key = new_key()
    read, write = os.pipe()
    os.write(write, key)
    os.close(write)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "AUTOLAB_RUN_SPEC": json.dumps(spec_for(tree)), "AUTOLAB_RESULT_KEY_FD": str(read)}
    proc = subprocess.Popen([sys.executable, "-m", "autolab_core.runner"], cwd=tree, env=env,
                            pass_fds=(read,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(read)
    started = tree / ".autolab-out" / "training-started"
    for _ in range(1200):
        if started.exists():
            break
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0 and "AUTOLAB_RESULT" not in out, out
    assert not _daemons_running("child-of-training")
    assert not _daemons_running("wait for the protected evaluation")

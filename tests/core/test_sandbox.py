"""autolab_core.sandbox on this machine: which levels work, that detection falls back cleanly
when one is missing, and what each level stops (writes, hidden paths, other processes, the
network)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runner import LEVELS, make_tree, new_key, run_job, spec_for

from autolab_core import sandbox
from autolab_core.job import parse_result

SANDBOXES = [p for p in LEVELS if p.values[0] != "none"]


def run_in(level: str, policy: sandbox.Policy, code: str) -> subprocess.CompletedProcess[str]:
    box = sandbox.wrap(level, [sys.executable, "-c", code], policy)
    return subprocess.run(box.argv, preexec_fn=box.preexec, cwd=policy.root, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers one byte to whoever connects."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.sendall(b"!")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def test_detection_lists_what_works_and_always_ends_with_none() -> None:
    have = sandbox.available()
    assert have[-1] == "none" and set(have) <= set(sandbox.LEVELS)
    assert sandbox.detect() == have[0]
    assert sandbox.detect("none") == "none"
    with pytest.raises(ValueError, match="unknown isolation level"):
        sandbox.detect("docker")


def test_without_bwrap_on_path_detection_falls_back(tmp_path: Path) -> None:
    """A runner whose PATH has no ``bwrap`` records the next level and still runs."""
    tree = make_tree(tmp_path)
    key = new_key()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    code, out = run_job(tree, spec_for(tree, isolation="bwrap"), key,
                        env={"PATH": f"{bin_dir}:/nonexistent"})
    assert code == 0, out
    expected = "landlock" if sandbox.landlock_abi() >= 1 else "none"
    assert parse_result(out, key).isolation == expected


def test_without_landlock_detection_falls_back_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels without Landlock are simulated by its ABI probe answering 0 (what the syscall
    returns there); nothing else is replaced."""
    sandbox.available.cache_clear()
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        assert sandbox.available() == ("none",)
        assert sandbox.detect("landlock") == "none" and sandbox.detect() == "none"
    finally:
        sandbox.available.cache_clear()


@pytest.mark.parametrize("level", SANDBOXES)
def test_only_the_output_directory_is_writable(tmp_path: Path, level: str) -> None:
    root, out = tmp_path / "tree", tmp_path / "tree" / "out"
    out.mkdir(parents=True)
    (root / "code.py").write_text("x = 1\n")
    done = run_in(level, sandbox.Policy(root, [out]), f"""
import os
for path in ("out/ok.txt", "code.py", "new.txt", {str(tmp_path / "outside.txt")!r}):
    try:
        open(path, "a").write("x")
        print("WROTE", path)
    except OSError:
        print("REFUSED", path)
""")
    assert done.stdout.count("REFUSED") == 3 and "WROTE out/ok.txt" in done.stdout, done
    assert (root / "code.py").read_text() == "x = 1\n"


@pytest.mark.parametrize("level", SANDBOXES)
def test_hidden_paths_are_not_readable(tmp_path: Path, level: str) -> None:
    root = tmp_path / "tree"
    (root / "data").mkdir(parents=True)
    (root / "data" / "val.bin").write_text("held-out")
    (root / "data" / "train.bin").write_text("training")
    state = tmp_path / "lab-state"
    state.mkdir()
    (state / "record.json").write_text("lab state")
    policy = sandbox.Policy(root, [], [root / "data" / "val.bin", state])
    done = run_in(level, policy, f"""
for path in ("data/val.bin", "data/train.bin", {str(state / "record.json")!r}):
    try:
        print(path, repr(open(path).read()))
    except OSError as exc:
        print(path, "unreadable")
""")
    assert "'training'" in done.stdout, done
    assert "held-out" not in done.stdout and "lab state" not in done.stdout, done


def test_bwrap_hides_the_runner_and_every_other_process(tmp_path: Path) -> None:
    if "bwrap" not in sandbox.available():
        pytest.skip("bwrap is not available on this machine")
    done = run_in("bwrap", sandbox.Policy(tmp_path, []), """
import os
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), os.getppid())
""")
    pids, ppid = done.stdout.rsplit(" ", 1)
    assert int(ppid) == 1 and os.getpid() not in eval(pids), done


@pytest.mark.parametrize("level", SANDBOXES)
def test_network_is_cut_when_the_lab_opts_out(tmp_path: Path, level: str, server: int) -> None:
    if level == "landlock" and sandbox.landlock_abi() < 4:
        pytest.skip("Landlock ABI < 4 cannot restrict TCP")
    code = f"""
import socket
try:
    print("GOT", socket.create_connection(("127.0.0.1", {server}), timeout=5).recv(1))
except OSError as exc:
    print("NO NETWORK", type(exc).__name__)
"""
    assert "GOT b'!'" in run_in(level, sandbox.Policy(tmp_path, []), code).stdout
    assert "NO NETWORK" in run_in(level, sandbox.Policy(tmp_path, [], network=False), code).stdout

"""The job runner: what every backend actually executes (``python -m autolab_core.runner``).

Standard library only (it travels with remote jobs). In the job's checkout (an exported tree
of the experiment's commit, no ``.git``) it:

1. takes the run's result key from a pipe: the file descriptor named by
   ``AUTOLAB_RESULT_KEY_FD``, or the first line of stdin with ``--key-stdin``. A key (or legacy
   nonce) that arrives in the environment is moved into a pipe and the runner re-executes
   itself, so it is gone from ``/proc/<runner>/environ`` before any lab code starts;
2. becomes a child subreaper, so every process the job starts, detached or not, stays its
   descendant and is killed and reaped by it;
3. checks the protected files and the pinned evaluation data against the spec's hashes;
4. runs the training command in the strongest sandbox available (:mod:`autolab_core.sandbox`)
   with the seed the orchestrator chose, the runner's own interpreter first on ``PATH`` and an
   environment without credentials (:func:`autolab_core.secrets.job_env`); the evaluation data
   is hidden from training;
5. kills the whole job (process group and orphans), re-checks the hashes, runs the protected
   evaluation the same way, kills what it left, checks the hashes once more;
6. prints exactly one ``AUTOLAB_RESULT`` line, signed with HMAC under the key, after every
   process of the job is gone. CPU seconds are metered per phase over every reaped process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autolab_core import sandbox
from autolab_core.hashing import expand_globs, hash_globs, hash_paths
from autolab_core.job import RunResult, RunSpec, SpecError, format_line, format_signed_result
from autolab_core.secrets import job_env

SPEC_ENV = "AUTOLAB_RUN_SPEC"
KEY_FD_ENV = "AUTOLAB_RESULT_KEY_FD"
KEY_ENV = "AUTOLAB_RESULT_KEY"  # fallback for backends that can pass neither stdin nor a fd
NONCE_ENV = "AUTOLAB_RESULT_NONCE"  # legacy name of the same fallback
_LEGACY_ENV = "AUTOLAB_RESULT_KEY_IS_NONCE"
OUTPUT_ENV = "AUTOLAB_OUTPUT_DIR"
EXIT_SETUP = 2
EXIT_PROTECTED = 3
EXIT_EVAL = 4
_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_PDEATHSIG = 4, 36, 1


def hardware() -> dict[str, str]:
    """Host, CPU model and GPU model (from nvidia-smi when there is one)."""
    info = {"host": socket.gethostname(), "cpu": platform.processor() or platform.machine()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout.strip()
            if out:
                info["gpu"] = ", ".join(sorted(set(out.splitlines())))
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


def _say(kind: str, payload: Mapping[str, Any]) -> None:
    print(format_line(kind, payload), flush=True)


# -- the key -----------------------------------------------------------------------------------
def _read_fd(fd: int, until_newline: bool) -> bytes:
    data = b""
    while len(data) < 4096:
        chunk = os.read(fd, 1 if until_newline else 4096)
        if not chunk or (until_newline and chunk == b"\n"):
            break
        data += chunk
    return data.strip()


def take_key(argv: list[str]) -> tuple[bytes, str | None]:
    """The result key (and the legacy nonce to echo, if that is how it came). Reads and closes
    the key pipe; a key from the environment is moved to a pipe and the runner re-executes."""
    if "--key-stdin" in argv:
        key = _read_fd(0, until_newline=True)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # lab code never reads what follows
        os.close(devnull)
        return key, None
    fd_text = os.environ.pop(KEY_FD_ENV, "")
    if fd_text:
        fd = int(fd_text)
        key = _read_fd(fd, until_newline=False)
        os.close(fd)
        legacy = os.environ.pop(_LEGACY_ENV, "") == "1"
        return key, (key.decode() if legacy else None)
    for name in (KEY_ENV, NONCE_ENV):
        value = os.environ.pop(name, "")
        if value:
            _reexec_with_key(value.encode(), legacy=name == NONCE_ENV)
    return b"", None


def _reexec_with_key(key: bytes, legacy: bool) -> None:
    """Start this runner again with ``key`` in a pipe, so no environment shows it."""
    read, write = os.pipe()
    os.write(write, key)
    os.close(write)
    os.set_inheritable(read, True)
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, NONCE_ENV)}
    env[KEY_FD_ENV] = str(read)
    if legacy:
        env[_LEGACY_ENV] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


# -- phases ------------------------------------------------------------------------------------
def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _drop_bytecode(tree: Path) -> None:
    """Remove ``__pycache__`` folders from the job's tree: bytecode that training wrote there
    (with the source's size and time) would otherwise be loaded by the protected evaluation."""
    for cache in sorted(tree.rglob("__pycache__"), reverse=True):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache, ignore_errors=True)


def run_phase(argv: list[str], env: dict[str, str], cwd: Path, box: sandbox.Sandboxed,
              tail: deque[str]) -> tuple[int, float, float, int]:
    """Run one phase to its end and kill what it left: ``(exit code, wall s, CPU s, number of
    detached processes it left running)``."""
    preexec = box.preexec

    def child_setup() -> None:
        sandbox.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if preexec is not None:
            preexec()

    cpu0, start = _cpu_children(), time.monotonic()
    proc = subprocess.Popen(
        box.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_setup)

    def forward() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()

    stopped: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        # Kill, never reap, here: reaping the first process under Popen.wait would make it
        # report success. The finally clause below reaps everything.
        stopped.append(signum)
        sandbox.signal_job(proc.pid, sandbox.descendants(os.getpid()))

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    escaped: list[int] = []
    left: dict[int, int] | None = None
    try:
        code = proc.wait()
        left = sandbox.descendants(os.getpid())
        # Outside the job's process group: started to outlive it (setsid, double fork). Under
        # bwrap the PID namespace dies with the job (its tear-down may still be under way here),
        # so nothing there can outlive it and nothing is judged.
        escaped = [] if box.level == "bwrap" else sorted(
            pid for pid, group in left.items() if group != proc.pid)
    finally:
        sandbox.kill_job(proc.pid, left)  # nothing the phase started survives it, daemons included
        for sig, handler in old.items():
            signal.signal(sig, handler)
    reader.join(timeout=10)
    if stopped:  # a time limit or a cancel: whatever the job's exit status says
        code = -stopped[0]
    return code, time.monotonic() - start, _cpu_children() - cpu0, len(escaped)


# -- the run -----------------------------------------------------------------------------------
def interpreter(spec: RunSpec) -> str:
    """The interpreter lab commands run with: the spec's ``python`` or the runner's own."""
    if spec.python:
        found = shutil.which(spec.python)
        if found is None:
            raise SpecError(f"[run] python {spec.python!r} is not an executable on PATH")
        return spec.python if "/" in spec.python else found
    return sys.executable


def lab_env(spec: RunSpec, out_dir: Path, python: str) -> dict[str, str]:
    """The environment lab code gets: allow-listed, no credentials, the interpreter's bin
    directory first on PATH."""
    path = os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", os.defpath)])
    tmp = out_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    extra = {**(spec.env or {}), spec.seed_env: str(spec.seed), OUTPUT_ENV: str(out_dir),
             "PATH": path, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    # An older spec carries no ``env``: the lab's variables came through our environment.
    passthrough = list(spec.passthrough) + (list(os.environ) if spec.env is None else [])
    env = job_env(os.environ, extra, passthrough)
    for name in (SPEC_ENV, KEY_FD_ENV, KEY_ENV, NONCE_ENV, _LEGACY_ENV):
        env.pop(name, None)
    return env


def _command(argv: list[str], python: str) -> list[str]:
    return [python, *argv[1:]] if argv and argv[0] in ("python", "python3") else list(argv)


class _Checks:
    """The protected files and pinned data of one run, checked at every step."""

    def __init__(self, spec: RunSpec, cwd: Path) -> None:
        self.spec, self.cwd = spec, cwd

    def failure(self, when: str, data: bool = True) -> dict[str, Any] | None:
        """What changed, checked ``when``; ``data=False`` skips re-hashing the (possibly large)
        evaluation data where the sandbox kept it read-only."""
        spec = self.spec
        if spec.protected and hash_paths(self.cwd, spec.protected) != spec.eval_hash:
            reason = {
                "before training": "protected files differ from main's: the evaluation code was "
                                   "changed",
                "after training": "the training run modified the protected evaluation files",
            }.get(when, f"the protected evaluation files were modified {when} (checked after "
                        "it ran)")
            return {"reason": reason, "files": spec.protected}
        if data and spec.protected_data and hash_globs(self.cwd, spec.protected_data) \
                != spec.protected_data_hash:
            return {"reason": f"protected evaluation data differs from its pinned hash {when}",
                    "files": spec.protected_data}
        return None


def run(spec: RunSpec, key: bytes, cwd: Path, nonce: str | None = None,
        say: Callable[[str, Mapping[str, Any]], None] = _say) -> int:
    """Run ``spec`` in ``cwd``; print metric, hardware, error and the one signed result line."""
    checks = _Checks(spec, cwd)
    failed = checks.failure("before training")
    if failed:
        say("ERROR", failed)
        return EXIT_PROTECTED
    level = sandbox.detect(spec.isolation)
    say("HARDWARE", {**hardware(), "isolation": level})
    out_dir = cwd / spec.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    python = interpreter(spec)
    env = lab_env(spec, out_dir, python)
    results_file = out_dir / spec.results_file
    results_file.unlink(missing_ok=True)
    hidden = [Path(p) for p in spec.hide]
    # The interpreter's environment stays readable even inside a hidden lab (``lab/.venv``):
    # only a directory that is an environment, and never one holding a hidden path.
    reveal = [env_dir for env_dir in {Path(sys.prefix), Path(python).parent.parent}
              if ((env_dir / "pyvenv.cfg").is_file() or (env_dir / "conda-meta").is_dir())
              and not any(h.is_relative_to(env_dir) for h in hidden)]
    data = [cwd / p for p in expand_globs(cwd, spec.protected_data)]
    # Training may write anywhere in the job's own tree (a disposable export: checkpoints, logs,
    # caches), never the protected files, and never sees the evaluation data.
    protected = [cwd / p for p in spec.protected]
    train_box = sandbox.wrap(level, _command(spec.train, python),
                             sandbox.Policy(cwd, [cwd], [*hidden, *data], spec.network, reveal,
                                            readonly=protected))

    tail: deque[str] = deque(maxlen=2000)
    code, wall, cpu, escaped = run_phase(train_box.argv, env, cwd, train_box, tail)
    if escaped:
        say("ERROR", {"reason": f"training left {escaped} detached process(es) running (setsid, "
                                "double fork); they were killed: a job must not outlive its "
                                "training", "detached": escaped})
        return EXIT_PROTECTED
    if code != 0:
        last = "".join(list(tail)[-20:])[-2000:]
        why = f"training exited with code {code}"
        if level != "none" and ("Read-only file system" in last or "Permission denied" in last):
            why += (f" (the {level} sandbox refused a write or read: lab code may write in "
                    "its own checkout but not the protected files, nor outside it, and cannot "
                    "read the protected evaluation data)")
        say("ERROR", {"reason": why, "exit_code": code, "tail": last})
        return code if code > 0 else 128 - code
    # bubblewrap hid the evaluation data (read-only) during training: no re-hash needed yet
    # (the small protected files are checked anyway, and everything again after the eval).
    failed = checks.failure("after training", data=level != "bwrap")
    if failed:
        say("ERROR", failed)
        return EXIT_PROTECTED

    extra: dict[str, float] = {}
    eval_wall = eval_cpu = None
    if spec.eval:
        results_file.unlink(missing_ok=True)  # only the protected evaluation may write it
        _drop_bytecode(cwd)  # training could have planted bytecode for protected modules
        eval_box = sandbox.wrap(level, _command(spec.eval, python),
                                sandbox.Policy(cwd, [out_dir], hidden, spec.network, reveal))
        code, eval_wall, eval_cpu, escaped = run_phase(eval_box.argv, env, cwd, eval_box,
                                                       deque(maxlen=50))
        failed = checks.failure("during the evaluation") or ({
            "reason": f"the evaluation left {escaped} detached process(es) running; killed",
            "detached": escaped} if escaped else None)
        if failed:
            say("ERROR", failed)
            return EXIT_PROTECTED
        if code != 0:
            say("ERROR", {"reason": f"evaluation exited with code {code}", "exit_code": code})
            return EXIT_EVAL
        try:
            data_out = json.loads(results_file.read_text())
            value = float(data_out[spec.metric])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            say("ERROR", {"reason": f"evaluation wrote no usable {spec.metric!r} in "
                                    f"{results_file.name}: {exc}"})
            return EXIT_EVAL
        extra = {k: float(v) for k, v in data_out.items()
                 if k != spec.metric and isinstance(v, int | float) and not isinstance(v, bool)}
        trusted = True
    else:
        assert spec.pattern is not None
        pattern = re.compile(spec.pattern)
        values = [float(m.group(1)) for ln in tail if (m := pattern.search(ln))]
        if not values:
            say("ERROR", {"reason": f"no line of the output matched {spec.pattern!r}"})
            return EXIT_EVAL
        value, trusted = values[-1], False
    if not math.isfinite(value):
        say("ERROR", {"reason": f"{spec.metric} is {value}"})
        return EXIT_EVAL
    result = RunResult(
        experiment_id=spec.experiment_id, metric=spec.metric, value=value, seed=spec.seed,
        attempt=spec.attempt, train_seconds=round(wall, 3), train_cpu_seconds=round(cpu, 3),
        eval_seconds=None if eval_wall is None else round(eval_wall, 3),
        eval_cpu_seconds=None if eval_cpu is None else round(eval_cpu, 3),
        eval_hash=spec.eval_hash, data_hash=spec.protected_data_hash, trusted=trusted,
        isolation=level, extra=extra)
    print(format_signed_result(result, key, {"nonce": nonce} if nonce else None), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    key, nonce = take_key(argv)
    sandbox.prctl(_PR_SET_DUMPABLE, 0)  # no /proc/<runner>/mem for same-user processes
    raw = os.environ.pop(SPEC_ENV, "")
    if not raw:
        print(f"autolab_core.runner: {SPEC_ENV} is not set; this module is run by autolab's "
              "backends", file=sys.stderr)
        return EXIT_SETUP
    if not key:
        print(f"autolab_core.runner: no result key; pass it on a pipe named by {KEY_FD_ENV}, "
              f"on stdin with --key-stdin, or (weaker) in {KEY_ENV}", file=sys.stderr)
        return EXIT_SETUP
    try:
        spec = RunSpec.from_json(raw)
    except SpecError as exc:
        _say("ERROR", {"reason": f"bad run spec: {exc}"})
        return EXIT_SETUP
    if not sandbox.prctl(_PR_SET_CHILD_SUBREAPER, 1):
        print("autolab_core.runner: cannot become a child subreaper; detached processes are "
              "found by process group only", file=sys.stderr)
    try:
        return run(spec, key, Path.cwd(), nonce)
    except SpecError as exc:
        _say("ERROR", {"reason": f"bad run spec: {exc}"})
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())

"""The job runner: what every backend actually executes (``python -m autolab_core.runner``).

It runs in the experiment's checkout and does, in order:

1. checks that the protected files (the evaluation code) hash to the value ``main`` has, so a
   patch cannot change how it is scored;
2. prints the hardware it runs on;
3. runs the training command with the seed the orchestrator chose (the patch cannot pick it),
   streaming its output and timing it (wall and CPU seconds);
4. runs the protected evaluation command, which writes the results file, and reads the metric
   from that file (or, for labs without a protected evaluation, from the training output with
   the configured pattern; such results are marked untrusted);
5. prints one ``AUTOLAB_RESULT`` line carrying a per-run nonce that the orchestrator generated.
   The nonce is removed from the environment before any lab code runs, so the patched program
   cannot print a result line the orchestrator would accept.

Instructions come in ``AUTOLAB_RUN_SPEC`` (JSON) so every backend only has to pass environment
variables through. Threat model: this stops a patch that changes or rescales what it prints; it
is not a sandbox against code written to attack the runner.
"""

from __future__ import annotations

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
import time
from collections import deque
from pathlib import Path
from typing import Any

from autolab_core.hashing import hash_paths
from autolab_core.metriclines import format_result_line

SPEC_ENV = "AUTOLAB_RUN_SPEC"
NONCE_ENV = "AUTOLAB_RESULT_NONCE"
OUTPUT_ENV = "AUTOLAB_OUTPUT_DIR"
EXIT_PROTECTED = 3
EXIT_EVAL = 4


def hardware() -> dict[str, str]:
    """Host, CPU model and GPU model (from nvidia-smi when there is one)."""
    info = {"host": socket.gethostname(), "cpu": platform.processor() or platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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


def _run_streaming(argv: list[str], env: dict[str, str], tail: deque[str]) -> int:
    """Run ``argv``, copying its output to ours line by line; keep the last lines."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", bufsize=1,
    )

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, old)


def _say(kind: str, payload: Any) -> None:
    print(f"AUTOLAB_{kind} {json.dumps(payload, sort_keys=True)}", flush=True)


def run(spec: dict[str, Any], nonce: str, cwd: Path) -> int:
    protected = list(spec.get("protected", []))
    if protected:
        actual = hash_paths(cwd, protected)
        if actual != spec.get("eval_hash"):
            _say("ERROR", {
                "reason": "protected files differ from main's: the evaluation code was changed",
                "files": protected, "expected": spec.get("eval_hash"), "actual": actual,
            })
            return EXIT_PROTECTED
    _say("HARDWARE", hardware())

    out_dir = cwd / spec.get("output_dir", ".autolab-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in (NONCE_ENV, SPEC_ENV)}
    env[spec.get("seed_env", "AUTOLAB_SEED")] = str(spec.get("seed", 0))
    env[OUTPUT_ENV] = str(out_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    results_file = out_dir / spec.get("results_file", "result.json")
    results_file.unlink(missing_ok=True)

    tail: deque[str] = deque(maxlen=2000)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    code = _run_streaming(list(spec["train"]), env, tail)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        _say("ERROR", {"reason": f"training exited with code {code}", "exit_code": code})
        return code if code > 0 else 128 - code

    if protected and hash_paths(cwd, protected) != spec.get("eval_hash"):
        _say("ERROR", {"reason": "the training run modified the protected evaluation files"})
        return EXIT_PROTECTED
    metric = spec["metric"]
    extra: dict[str, float] = {}
    if spec.get("eval"):
        results_file.unlink(missing_ok=True)  # only the protected evaluation may write it
        code = _run_streaming(list(spec["eval"]), env, deque(maxlen=50))
        if code != 0:
            _say("ERROR", {"reason": f"evaluation exited with code {code}", "exit_code": code})
            return EXIT_EVAL
        try:
            data = json.loads(results_file.read_text())
            value = float(data[metric])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _say("ERROR", {"reason": f"evaluation wrote no usable {metric!r} in "
                                     f"{results_file.name}: {exc}"})
            return EXIT_EVAL
        extra = {k: float(v) for k, v in data.items()
                 if k != metric and isinstance(v, int | float) and not isinstance(v, bool)}
        trusted = True
    else:
        pattern = re.compile(spec["pattern"])
        values = [float(m.group(1)) for ln in tail if (m := pattern.search(ln))]
        if not values:
            _say("ERROR", {"reason": f"no line of the output matched {spec['pattern']!r}"})
            return EXIT_EVAL
        value, trusted = values[-1], False
    if not math.isfinite(value):
        _say("ERROR", {"reason": f"{metric} is {value}"})
        return EXIT_EVAL
    print(format_result_line({
        "nonce": nonce, "metric": metric, "value": value, "seed": spec.get("seed", 0),
        "train_seconds": round(wall, 3), "train_cpu_seconds": round(cpu, 3),
        "eval_hash": spec.get("eval_hash"), "trusted": trusted, "extra": extra,
    }), flush=True)
    return 0


def main() -> int:
    raw = os.environ.get(SPEC_ENV)
    if not raw:
        print(f"autolab_core.runner: {SPEC_ENV} is not set; this module is run by autolab's backends",
              file=sys.stderr)
        return 2
    nonce = os.environ.pop(NONCE_ENV, "")
    return run(json.loads(raw), nonce, Path.cwd())


if __name__ == "__main__":
    sys.exit(main())

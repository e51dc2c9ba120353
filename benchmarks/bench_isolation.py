"""Overhead of the runner per run, with and without each sandbox.

    python benchmarks/bench_isolation.py                # 7 runs per level
    python benchmarks/bench_isolation.py --runs 3 --json out.json

Each run is a tiny job (training and a protected evaluation that each start Python and do
nothing else), run through ``python -m autolab_core.runner`` with its key on a pipe, and the
same two commands run directly, one after the other, with no runner. The overhead is the
median wall-clock difference, and the CPU time it adds (less sensitive to a loaded
machine than wall time): hashing the protected files and data four times, the signed
result, subreaper clean-up, the sandbox (bwrap start-up or the Landlock rule walk) and the
runner's own interpreter start. Goal (issue 11): under 2% of a 30 s run, i.e. 0.6 s.
A second number, the runner's wall time around a 3 s training run, checks that the overhead
does not grow with the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autolab_core import sandbox  # noqa: E402
from autolab_core.hashing import hash_globs, hash_paths  # noqa: E402

TRAIN = """\
import os, sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
open(os.path.join(os.environ["AUTOLAB_OUTPUT_DIR"], "model.txt"), "w").write("1.5")
"""
EVALUATE = """\
import json, os
out = os.environ["AUTOLAB_OUTPUT_DIR"]
json.dump({"val_loss": float(open(os.path.join(out, "model.txt")).read())},
          open(os.path.join(out, "result.json"), "w"))
"""


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "data").mkdir(parents=True)
    (tree / "train.py").write_text(TRAIN)
    (tree / "evaluate.py").write_text(EVALUATE)
    (tree / "prepare.py").write_text("SCALE = 1\n" * 2000)
    for i in range(20):
        (tree / "data" / f"shard{i}.bin").write_bytes(os.urandom(1 << 20))  # 20 MiB pinned
    return tree


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runner_once(tree: Path, level: str, seconds: float) -> tuple[float, float]:
    spec = {"experiment_id": "b", "train": ["python", "train.py", str(seconds)],
            "eval": ["python", "evaluate.py"], "metric": "val_loss",
            "protected": ["evaluate.py", "prepare.py"],
            "eval_hash": hash_paths(tree, ["evaluate.py", "prepare.py"]),
            "protected_data": ["data/*"], "protected_data_hash": hash_globs(tree, ["data/*"]),
            "isolation": level, "env": {}}
    read, write = os.pipe()
    os.write(write, b"k" * 32)
    os.close(write)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO),
           "AUTOLAB_RUN_SPEC": json.dumps(spec), "AUTOLAB_RESULT_KEY_FD": str(read)}
    cpu, start = _children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "autolab_core.runner"], cwd=tree, env=env,
                          pass_fds=(read,), capture_output=True, text=True, check=False)
    took, cpu = time.perf_counter() - start, _children_cpu() - cpu
    os.close(read)
    if done.returncode != 0 or f'"isolation":"{level}"' not in done.stdout:
        raise SystemExit(f"runner failed under {level}: {done.stdout}{done.stderr}")
    return took, cpu


def direct_once(tree: Path, seconds: float) -> tuple[float, float]:
    out = tree / ".autolab-out"
    out.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "AUTOLAB_OUTPUT_DIR": str(out)}
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "train.py", str(seconds)], cwd=tree, env=env, check=True)
    subprocess.run([sys.executable, "evaluate.py"], cwd=tree, env=env, check=True)
    return time.perf_counter() - start, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = make_tree(Path(tmp))
        direct = [direct_once(tree, 0) for _ in range(args.runs)]
        d_wall, d_cpu = (statistics.median(x) for x in zip(*direct, strict=True))
        print(f"direct (no runner): {d_wall * 1000:.0f} ms wall, {d_cpu * 1000:.0f} ms CPU per run")
        for level in sandbox.available():
            runs = [runner_once(tree, level, 0) for _ in range(args.runs)]
            wall, cpu = (statistics.median(x) for x in zip(*runs, strict=True))
            long_run = runner_once(tree, level, 3.0)[0] - direct_once(tree, 3.0)[0]
            results[level] = {"runner_wall_s": wall, "overhead_wall_s": wall - d_wall,
                              "overhead_cpu_s": cpu - d_cpu, "overhead_wall_3s_run_s": long_run,
                              "percent_of_30s": 100 * (wall - d_wall) / 30}
            print(f"{level:9s} overhead {(wall - d_wall) * 1000:5.0f} ms wall "
                  f"({100 * (wall - d_wall) / 30:.2f}% of a 30 s run), "
                  f"{(cpu - d_cpu) * 1000:5.0f} ms CPU; {long_run * 1000:.0f} ms wall around "
                  "a 3 s run")
    worst = max(r["percent_of_30s"] for r in results.values())
    print(f"worst overhead: {worst:.2f}% of a 30 s run (goal < 2%): "
          f"{'OK' if worst < 2 else 'OVER'}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

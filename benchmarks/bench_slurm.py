"""Overhead of the slurm backend on the local one-node cluster (``scripts/local-slurm.sh up``).

Runs ``--jobs`` short jobs (``python -c pass``) the way the orchestrator does: at most
``--concurrency`` in flight, ``poll()`` every ``--poll-every`` seconds (the orchestrator's
default 0.5 s), the backend's own ``poll_interval_s`` as configured. Reports:

* submit -> start: ``submit()`` returning to the job's command starting on the node (the job
  wrapper's ``started_at``), split into SLURM's part (to the batch script starting: scheduling
  and launch) and the job's start-up (srun, Python, submitit unpickling the call); and the
  ``submit()`` call itself;
* state detection: the command ending (its exit record) to ``poll()`` first returning a
  terminal state;
* orchestrator CPU per experiment: this process's CPU time for submitting and polling, with
  and without the CPU of the sbatch/squeue/scancel processes it started.

    python benchmarks/bench_slurm.py --jobs 100 --concurrency 8

``--file-ops 1000`` measures instead the orchestrator's file operations per job per minute with
1,000 jobs in flight: the jobs go out as one held job array (real SLURM jobs, pending with
``JobHeldUser``, as most of a big sweep is), ``poll()`` runs every ``--poll-every`` seconds for
``--minutes``, and every open/stat/listdir/rename/unlink/mkdir the process makes is counted
(an audit hook for what Python audits, wrappers around ``os.stat``/``os.lstat`` for the rest).

    python benchmarks/bench_slurm.py --file-ops 1000 --minutes 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autolab.backends import slurm_cli
from autolab.backends.slurm import SlurmBackend
from autolab.backends.slurm_store import RunDir
from autolab_core.models import JobHandle, JobSpec
from autolab_core.testing import make_context


def summary(name: str, values: list[float], unit: str = "s") -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return (f"{name:<34} median {statistics.median(values):7.3f} {unit}   p90 {p90:7.3f} {unit}"
            f"   max {values[-1]:7.3f} {unit}   (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll-every", type=float, default=0.5,
                        help="seconds between the orchestrator's poll() calls")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="the backend's poll_interval_s (seconds between squeue calls)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--file-ops", type=int, metavar="JOBS",
                        help="measure file operations per job per minute with JOBS in flight")
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to poll (--file-ops)")
    args = parser.parse_args()
    if args.file_ops:
        return file_ops(args)

    reason = SlurmBackend.available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    calls = {"squeue": 0}
    real_squeue = slurm_cli.squeue

    def counted_squeue(*a: object, **kw: object) -> dict[str, slurm_cli.Row]:
        calls["squeue"] += 1
        return real_squeue(*a, **kw)  # type: ignore[arg-type]

    slurm_cli.squeue = counted_squeue  # type: ignore[assignment]

    tmp = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    (tmp / "work").mkdir()
    options = {
        "poll_interval_s": args.poll_interval,
        # when the batch script starts, to split submit -> start into SLURM and job start-up
        "setup": ["export BENCH_BATCH_START=$(date +%s.%N)"],
    }
    backend = SlurmBackend(options, make_context(tmp, "bench"))
    problem = backend.check()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2

    code = "import os; print('batch', os.environ['BENCH_BATCH_START'])"
    todo = [JobSpec(f"b{i:04d}", (sys.executable, "-c", code), str(tmp / "work"))
            for i in range(args.jobs)]
    inflight: dict[str, JobHandle] = {}
    handles: list[JobHandle] = []
    submitted_at: dict[str, float] = {}
    submit_cost: list[float] = []
    seen_done: dict[str, float] = {}
    bad: list[str] = []
    cpu0, times0, wall0 = time.process_time(), os.times(), time.monotonic()
    while todo or inflight:
        while todo and len(inflight) < args.concurrency:
            t = time.time()
            handle = backend.submit(todo.pop(0))
            submit_cost.append(time.time() - t)
            submitted_at[handle.job_id] = time.time()
            inflight[handle.job_id] = handle
            handles.append(handle)
        states = backend.poll(list(inflight.values()))
        now = time.time()
        for job_id, state in states.items():
            if state.status.terminal:
                seen_done[job_id] = now
                inflight.pop(job_id)
                if state.status.value != "succeeded":
                    bad.append(f"{job_id}: {state.status.value} {state.reason}")
        time.sleep(args.poll_every)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    times1 = os.times()
    children = (times1.children_user - times0.children_user) + (
        times1.children_system - times0.children_system)

    start_latency, detect_latency, sched_latency, boot_latency = [], [], [], []
    for handle in handles:
        run = RunDir(handle.data["run_dir"])
        started, ended = run.started() or {}, run.exit_record() or {}
        if "started_at" in started:
            start_latency.append(started["started_at"] - submitted_at[handle.job_id])
            log = run.log_path.read_text() if run.log_path.exists() else ""
            batch = [float(ln.split()[1]) for ln in log.splitlines() if ln.startswith("batch ")]
            if batch:
                sched_latency.append(batch[0] - submitted_at[handle.job_id])
                boot_latency.append(started["started_at"] - batch[0])
        if "finished_at" in ended:
            detect_latency.append(seen_done[handle.job_id] - ended["finished_at"])
    n = len(handles)
    print(f"slurm backend overhead: {n} jobs, concurrency {args.concurrency}, poll() every "
          f"{args.poll_every} s, poll_interval_s {args.poll_interval} s, wall {wall:.1f} s")
    print(summary("submit() call", submit_cost))
    print(summary("submit -> command start", start_latency))
    print(summary("  submit -> batch script start", sched_latency))
    print(summary("  batch script -> command start", boot_latency))
    print(summary("command end -> poll() sees it", detect_latency))
    print(f"{'orchestrator CPU per experiment':<34} {1000 * cpu / n:7.1f} ms in-process, "
          f"{1000 * (cpu + children) / n:7.1f} ms with sbatch/squeue children")
    print(f"{'squeue calls':<34} {calls['squeue']} ({calls['squeue'] / n:.2f} per job)")
    if bad:
        print(f"{len(bad)} jobs did not succeed:", *bad[:5], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps({
            "jobs": n, "wall_s": wall, "cpu_s": cpu, "children_cpu_s": children,
            "submit_s": submit_cost, "start_latency_s": start_latency,
            "detect_latency_s": detect_latency, "squeue_calls": calls["squeue"],
        }))
    return 1 if bad else 0


_FILE_EVENTS = {"open", "os.listdir", "os.scandir", "os.rename", "os.replace", "os.remove",
                "os.unlink", "os.mkdir", "os.rmdir", "glob.glob", "os.chmod", "os.truncate"}


def file_ops(args: argparse.Namespace) -> int:
    """File operations of the orchestrator per job per minute, ``args.file_ops`` jobs in flight."""
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="bench-slurm-files-"))
    (tmp / "work").mkdir()
    backend = SlurmBackend({"poll_interval_s": args.poll_interval, "array": True, "probe": False,
                            "sbatch_args": ["--hold"]}, make_context(tmp, "benchfiles"))
    specs = [JobSpec(f"f{i:05d}", (sys.executable, "-c", "pass"), str(tmp / "work"))
             for i in range(args.file_ops)]
    handles = backend.submit_many(specs)
    counts = {"ops": 0}
    counting = {"on": False}

    def hook(event: str, _args: tuple[object, ...]) -> None:
        if counting["on"] and event in _FILE_EVENTS:
            counts["ops"] += 1

    sys.addaudithook(hook)
    real_stat, real_lstat = os.stat, os.lstat

    def stat(*a: object, **kw: object) -> os.stat_result:
        if counting["on"]:
            counts["ops"] += 1
        return real_stat(*a, **kw)  # type: ignore[arg-type]

    def lstat(*a: object, **kw: object) -> os.stat_result:
        if counting["on"]:
            counts["ops"] += 1
        return real_lstat(*a, **kw)  # type: ignore[arg-type]

    os.stat, os.lstat = stat, lstat  # type: ignore[assignment]
    try:
        states = backend.poll(handles)  # first sight of every job (reads each one's files once)
        pending = sum(1 for s in states.values() if s.status.value == "pending")
        polls, t_end = 0, time.monotonic() + 60 * args.minutes
        counting["on"] = True
        t0 = time.monotonic()
        while time.monotonic() < t_end:
            backend.poll(handles)
            polls += 1
            time.sleep(args.poll_every)
        elapsed = time.monotonic() - t0
        counting["on"] = False
    finally:
        os.stat, os.lstat = real_stat, real_lstat  # type: ignore[assignment]
        array_ids = sorted({h.job_id.split("_")[0] for h in handles})
        subprocess.run(["scancel", *array_ids], check=False)
    per_job_min = counts["ops"] / len(handles) / (elapsed / 60)
    print(f"slurm backend file operations: {len(handles)} jobs in flight ({pending} pending), "
          f"{polls} polls in {elapsed:.0f} s (one every {args.poll_every} s), "
          f"squeue tick {backend.tick(len(handles)):g} s")
    print(f"{'file operations':<34} {counts['ops']} in all, {per_job_min:.2f} per job per minute, "
          f"{counts['ops'] / elapsed:.1f} per second")
    if args.json:
        args.json.write_text(json.dumps({"jobs": len(handles), "file_ops": counts["ops"],
                                         "seconds": elapsed, "per_job_per_minute": per_job_min}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

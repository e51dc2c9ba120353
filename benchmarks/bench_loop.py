"""Benchmarks of the run loop (issue 3).

    python benchmarks/bench_loop.py busy     [--jobs 24] [--workers 2] [--job-seconds 2]
    python benchmarks/bench_loop.py search   [--candidates 8] [--steps 300]

``busy``: the share of slot time spent running experiments while the queue is not empty, and
the orchestration overhead per experiment (slot time not spent running, divided by the number
of runs), on the toy lab with a training step that sleeps ``--job-seconds``.

``search``: the knob explorer against random search over the same knobs, on the real reference
lab (torch on CPU), each with the same number of candidate experiments; the gain per
compute-hour is the best confirmed improvement over the starting main divided by the CPU hours
the session used, and the ratio of the two is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from autolab.run.assemble import build_loop
from autolab.run.loop import RunOptions
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus


def busy_fraction(exps: list[Experiment], slots: int) -> tuple[float, float, int]:
    """(busy fraction, overhead seconds per run, runs) over the span the slots were in use."""
    spans = []
    for e in exps:
        start, end = e.at(ExperimentStatus.STARTED), None
        for status in (ExperimentStatus.FINISHED, ExperimentStatus.FAILED,
                       ExperimentStatus.CANCELLED):
            end = end or e.at(status)
        if start is not None and end is not None:
            spans.append((start, end))
    if not spans:
        return 0.0, 0.0, 0
    first = min(s for s, _ in spans)
    # The queue is non-empty until the last job starts; measure up to the last start + its run.
    last_start = max(s for s, _ in spans)
    horizon = last_start
    running = sum(max(0.0, min(e, horizon) - s) for s, e in spans if s < horizon)
    capacity = slots * (horizon - first)
    overhead = (capacity - running) / max(1, len(spans) - slots)
    return running / capacity if capacity else 0.0, overhead, len(spans)


def bench_busy(args: argparse.Namespace) -> None:
    from toylab import make_toy_lab

    with tempfile.TemporaryDirectory() as tmp:
        lab = make_toy_lab(Path(tmp) / "lab")
        train = (lab.root / "train.py").read_text().replace(
            "SEED = int", f"import time; time.sleep({args.job_seconds})\nSEED = int")
        (lab.root / "train.py").write_text(train)
        lab.repo.git.commit("-qam", "slow toy")
        opts = RunOptions(workers=args.workers, max_experiments=args.jobs, poll_interval=0.2)
        loop = build_loop(lab, opts, say=lambda _m: None)
        t0 = time.time()
        exps = loop.run()
        wall = time.time() - t0
        frac, overhead, n = busy_fraction(exps, args.workers)
        print(f"runs: {n} on {args.workers} slots, {args.job_seconds}s each, wall {wall:.1f}s")
        print(f"worker busy fraction (queue non-empty): {100 * frac:.2f}%")
        print(f"orchestration overhead per experiment: {overhead * 1000:.0f} ms")


def session(root: Path, strategy: str, candidates: int, workers: int) -> list[Experiment]:
    lab = Lab(root)
    opts = RunOptions(workers=workers, max_experiments=candidates, poll_interval=0.5)
    loop = build_loop(lab, opts, say=lambda m: print("   ", m), strategy=strategy)
    return loop.run()


def bench_search(args: argparse.Namespace) -> None:
    from autolab.training import create_reference_lab

    results = {}
    for strategy in ("knob", "random"):
        with tempfile.TemporaryDirectory() as tmp:
            root = create_reference_lab(Path(tmp) / "lab", overrides={"STEPS": args.steps})
            Lab.init(root)
            t0 = time.time()
            exps = session(root, strategy, args.candidates, args.workers)
            cpu_h = sum(e.result.extra.get("train_cpu_seconds", 0) for e in exps
                        if e.result is not None) / 3600
            base = [e.result.value for e in exps if e.role == "baseline" and e.result]
            start = statistics.fmean(base[:3])
            finals = [e for e in exps if e.verdict == "promoted"]
            gain = sum(e.effect or 0 for e in finals)
            results[strategy] = (gain, cpu_h, time.time() - t0, len(finals))
            print(f"{strategy}: start {start:.4f}, promoted {len(finals)}, total gain "
                  f"{gain:.4f} bpb, CPU {cpu_h:.3f} h, wall {results[strategy][2]:.0f}s, "
                  f"gain per CPU-hour {gain / cpu_h if cpu_h else 0:.3f}")
    k, r = results["knob"], results["random"]
    knob_rate, random_rate = k[0] / k[1], r[0] / r[1]
    ratio = "inf (random found nothing)" if random_rate == 0 else f"{knob_rate / random_rate:.2f}"
    print(f"knob explorer vs random search, gain per compute-hour: {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("busy")
    b.add_argument("--jobs", type=int, default=24)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--job-seconds", type=float, default=2.0)
    s = sub.add_parser("search")
    s.add_argument("--candidates", type=int, default=8)
    s.add_argument("--steps", type=int, default=300)
    s.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    {"busy": bench_busy, "search": bench_search}[args.what](args)


if __name__ == "__main__":
    main()

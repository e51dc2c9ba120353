"""A synthetic lab: experiments with realistic histories and curves, for demos, tests and
benchmarks of the Reporter (``benchmarks/bench_metrics.py``).

API::

    synthetic_lab(n, slots=8, seed=0, start=1.7e9, id_format="e{:05d}") -> list[Experiment]
    synthetic_curve(experiment, steps, names) -> list[MetricPoint]

Main gets 3 baseline runs after each promotion and one every 25 experiments; 1 in 40
candidates crashes, 1 in 15 is pruned, about 1 in 100 is promoted (verdict ``promoted`` and a
``promoted:<commit>`` flag; main's commit and code hash change after it). Experiment ids are
``id_format.format(k)`` for k = 1..n (``"{:04d}"`` gives the lab's own ids, ``0001`` .. ``10000``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from autolab_core.models import (
    Experiment,
    ExperimentStatus,
    Hypothesis,
    MetricPoint,
    Result,
    StatusEvent,
)
from autolab_core.vocab import Flag, Role, Verdict

KNOBS = ("lr", "warmup", "depth", "width", "wd", "beta2", "batch", "dropout")


def _events(rng: random.Random, t: float, fate: ExperimentStatus, run_s: float
            ) -> tuple[tuple[StatusEvent, ...], float]:
    q = t - rng.uniform(5, 120)
    sub = t - rng.uniform(0.5, 5)
    end = t + run_s
    ev = [StatusEvent(ExperimentStatus.QUEUED, q), StatusEvent(ExperimentStatus.SUBMITTED, sub),
          StatusEvent(ExperimentStatus.STARTED, t)]
    if fate is not ExperimentStatus.STARTED:
        ev.append(StatusEvent(fate, end))
    return tuple(ev), end


def synthetic_lab(n: int, slots: int = 8, seed: int = 0, start: float = 1.7e9,
                  id_format: str = "e{:05d}") -> list[Experiment]:
    """``n`` experiments spread over ``slots`` workers; the last few are still running."""
    rng = random.Random(seed)
    free = [start] * slots
    main_value, sigma, commit = 1.0, 0.002, "c0000"
    owed = 2  # baseline runs still owed on the current main (3 per main in all)
    out: list[Experiment] = []
    for i in range(n):
        slot = min(range(slots), key=free.__getitem__)
        t = free[slot] + rng.uniform(1, 10)
        role = Role.BASELINE if i % 25 == 0 or owed > 0 else Role.CANDIDATE
        owed = max(0, owed - 1) if role == Role.BASELINE else owed
        knob = KNOBS[i % len(KNOBS)]
        hyp = Hypothesis(
            id=f"h{i:05d}",
            title="baseline" if role == Role.BASELINE else f"{knob} x{rng.choice((0.5, 2))}",
            source="baseline" if role == Role.BASELINE else "knob",
            changes={} if role == Role.BASELINE else {knob: rng.random()}, created_at=t - 200,
        )
        fate = ExperimentStatus.FINISHED
        if role == Role.CANDIDATE:
            r = rng.random()
            if r < 1 / 40:
                fate = ExperimentStatus.FAILED
            elif r < 1 / 40 + 1 / 15:
                fate = ExperimentStatus.PRUNED
        running = i >= n - slots
        if running:
            fate = ExperimentStatus.STARTED
        run_s = rng.uniform(250, 350) * (0.4 if fate is ExperimentStatus.PRUNED else 1)
        history, end = _events(rng, t, fate, run_s)
        free[slot] = end
        effect = 0.0 if role == Role.BASELINE else rng.gauss(0.0005, 0.002)
        value = main_value + effect + rng.gauss(0, sigma)
        result = Result("val_bpb", value, seed=i, train_seconds=run_s) \
            if fate is ExperimentStatus.FINISHED else None
        flags: tuple[str, ...] = ()
        reason = verdict = None
        base_commit, code_hash = commit, f"code-{commit}" if role == Role.BASELINE else f"code-{i}"
        if fate is ExperimentStatus.FAILED:
            flags, reason = ("crash_oom",), "CUDA out of memory"
        if role == Role.CANDIDATE and result is not None and value < main_value - 3 * sigma:
            commit, owed = f"c{i:05d}", 3
            flags, verdict = (str(Flag(Verdict.PROMOTED, commit)),), Verdict.PROMOTED
            code_hash = f"code-{commit}"
            main_value = value
        exp_id = id_format.format(i + 1)
        out.append(Experiment(
            id=exp_id, hypothesis=hyp, base_commit=base_commit, branch=f"autolab/{exp_id}",
            base_code=f"code-{base_commit}", code_hash=code_hash,
            role=role, seed=i, history=history, slot=f"worker-{slot}", result=result,
            flags=flags, reason=reason, verdict=verdict,
        ))
    return out


def synthetic_curve(experiment: Experiment, steps: int, names: Sequence[str]) -> list[MetricPoint]:
    """A falling loss, a steady throughput and a cosine learning rate, ``steps`` points each."""
    rng = random.Random(experiment.seed)
    t0 = experiment.at(ExperimentStatus.STARTED) or 0.0
    scale = 1.0 + (experiment.result.value - 1.0 if experiment.result else rng.gauss(0, 0.01))
    pace = rng.uniform(0.8, 1.2)
    pts = []
    for s in range(steps):
        wall = t0 + s * pace
        for name in names:
            if name == "tok_per_s":
                v = 50_000 * (1 + rng.gauss(0, 0.02))
            elif name == "lr":
                v = 3e-4 * 0.5 * (1 + math.cos(math.pi * s / steps))
            else:
                v = scale * (2.0 + 8.0 * math.exp(-s / (steps / 8))) + rng.gauss(0, 0.02)
            pts.append(MetricPoint(experiment.id, s, name, v, wall))
    return pts

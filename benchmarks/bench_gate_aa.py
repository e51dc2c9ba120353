"""The noise gate's false-promotion rate on identical code, and its power on real wins.

    python benchmarks/bench_gate_aa.py [--trials 20000] [--seed 1]

Monte Carlo over the real :func:`autolab.run.gate.judge` (screen, then ``confirm_runs`` fresh
seeds), with sigma pooled as :func:`autolab.run.gate.pooled_sigma` does: over main's runs when
the candidate is screened, over main's runs and the candidate's when it is confirmed. Noise is
Gaussian with sigma 1 and independent between runs (fresh seeds); ``min_sigma`` is 0 (the worst
case: no floor). ``m`` is the number of runs measuring main at the time of the verdict: 3 with
calibration only, more as interleaved baselines (``[promotion] baseline_every``) accumulate.
For each m it prints the rate at which an A/A candidate is promoted and the rate at which a
real win of 2, 3 and 4 sigma is, for the gate as configured (``k_sigma = 2``), with a normal k
at confirmation (before) and with the Student's t quantile for the degrees of freedom of the
pooled sigma (now).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from autolab.run import gate
from autolab_core.config import PromotionSection
from autolab_core.models import Direction

MIN = Direction.MINIMIZE
RULES = PromotionSection(noise_runs=3, confirm_runs=2, k_sigma=2.0)


def pooled(*groups: list[float]) -> tuple[float, int]:
    ss = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return math.sqrt(ss / df), df


def promoted(rng: random.Random, m: int, effect: float, variant: str) -> bool:
    """One candidate: screened on one run against ``m`` runs of main, confirmed on
    ``confirm_runs`` fresh ones. ``variant``: "main-sigma" (sigma of main's runs only, normal
    k), "normal" (pooled sigma, normal k: the gate before), "t" (pooled sigma, t quantile)."""
    main = [rng.gauss(0.0, 1.0) for _ in range(m)]
    first = [rng.gauss(-effect, 1.0)]  # minimising: a win is lower
    if not gate.judge(first, main, pooled(main)[0], MIN, RULES, screen=True).passed:
        return False
    runs = first + [rng.gauss(-effect, 1.0) for _ in range(RULES.confirm_runs)]
    sigma, df = pooled(main) if variant == "main-sigma" else pooled(main, runs)
    return gate.judge(runs, main, sigma, MIN, RULES, screen=False,
                      df=df if variant == "t" else None).passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'gate':<34} {'main runs':>9} {'A/A promoted':>13} {'win 2 sigma':>12} "
          f"{'win 3 sigma':>12} {'win 4 sigma':>12}")
    variants = [("main-sigma", "sigma of main's runs, k = 2", (3,)),
                ("normal", "before: pooled sigma, k = 2", (3, 4, 6, 8, 12, 16)),
                ("t", "now: pooled sigma, t quantile", (3, 4, 6, 8, 12, 16))]
    for variant, name, ms in variants:
        for m in ms:
            rng = random.Random(args.seed * 1000 + m)
            rates = [sum(promoted(rng, m, effect, variant) for _ in range(args.trials))
                     / args.trials for effect in (0.0, 2.0, 3.0, 4.0)]
            print(f"{name:<34} {m:>9} " + " ".join(f"{100 * r:>12.2f}%" for r in rates))


if __name__ == "__main__":
    main()

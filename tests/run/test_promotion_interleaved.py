"""Interleaved baselines of main, fresh confirmation seeds and the noise-aware compute hold,
through :class:`autolab.run.promotion.Promotion` on a real git lab (runs written directly)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs
from runfixtures import candidate
from toylab import make_toy_lab

from autolab.run.ledger import Ledger
from autolab.run.promotion import Promotion, schedule_baselines
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus, Result
from autolab_core.vocab import Role, Verdict


def lab_with(tmp_path: Path, promotion_lines: str) -> Ledger:
    lab = make_toy_lab(tmp_path / "lab")
    toml = (lab.root / "autolab.toml").read_text().replace(
        "min_sigma = 0.005", f"min_sigma = 0.005\n{promotion_lines}")
    (lab.root / "autolab.toml").write_text(toml)
    subprocess.run(["git", "-C", str(lab.root), "commit", "-qam", "promotion settings"], check=True)
    return Ledger(Lab(lab.root), say=print)


def done(ledger: Ledger, exp: Experiment, value: float, cpu: float | None = None,
         at: float | None = None) -> Experiment:
    extra = {} if cpu is None else {"train_cpu_seconds": cpu * 0.8, "eval_cpu_seconds": cpu * 0.2}
    result = Result(metric="val_bpb", value=value, seed=exp.seed, extra=extra)
    return ledger.put(attrs.evolve(exp, result=result).with_status(ExperimentStatus.FINISHED, at=at))


def baseline_seeds(ledger: Ledger) -> list[int]:
    return [e.seed for e in ledger.experiments() if e.role == Role.BASELINE]


def test_a_fresh_baseline_of_main_runs_after_every_n_candidate_runs(tmp_path: Path) -> None:
    ledger = lab_with(tmp_path, "baseline_every = 2")
    assert ledger.config.promotion.baseline_every == 2
    for exp, value in zip(schedule_baselines(ledger), [1.0, 1.01, 0.99], strict=True):
        done(ledger, exp, value)
    assert baseline_seeds(ledger) == [0, 1, 2]
    candidate(ledger, 1.02, lr="0.011")
    assert schedule_baselines(ledger) == []  # one candidate run: not yet
    candidate(ledger, 1.03, lr="0.012")
    (again,) = schedule_baselines(ledger)  # two: a fresh run of main, with a fresh seed
    assert again.role == Role.BASELINE and again.seed == 3 and again.base_code == ledger.main_code()
    done(ledger, again, 1.0)
    candidate(ledger, 1.02, lr="0.013")
    assert schedule_baselines(ledger) == []
    candidate(ledger, 1.02, lr="0.014")
    assert [e.seed for e in schedule_baselines(ledger)] == [4]
    # The gate compares the next candidate with every run of main, interleaved ones included
    # (the one still queued is not a result yet).
    late = candidate(ledger, 0.5, lr="0.02")
    Promotion(ledger).judge()
    judged = ledger.get(late.id)
    assert judged is not None and judged.verdict == Verdict.CONFIRMING
    assert "1 vs 4 runs" in (judged.reason or "")
    # ... and confirms it with seeds no run of main's code or of its own used.
    assert "fresh seeds 5, 6" in (judged.reason or "")
    seeds = [e.seed for e in ledger.experiments() if e.parent == late.id]
    assert seeds == [5, 6]


def test_baseline_every_zero_keeps_only_the_calibration(tmp_path: Path) -> None:
    ledger = lab_with(tmp_path, "baseline_every = 0")
    for exp in schedule_baselines(ledger):
        done(ledger, exp, 1.0)
    for lr in ("0.011", "0.012", "0.013"):
        candidate(ledger, 1.02, lr=lr)
    assert schedule_baselines(ledger) == [] and baseline_seeds(ledger) == [0, 1, 2]


def win_next_to_loaded_baselines(tmp_path: Path, cand_cpu: list[float],
                                 changes: dict[str, object] | None = None) -> Experiment:
    """Main calibrated on an idle machine (10 CPU s per run), then measured again next to a CPU
    hog (12 s per run: same work, more CPU); a winning candidate ran at that later time."""
    ledger = lab_with(tmp_path, "baseline_every = 1\nmin_cost_seconds = 0.5")
    for exp, cpu in zip(schedule_baselines(ledger), [10.0, 10.2, 9.9], strict=True):
        done(ledger, exp, [1.0, 1.01, 0.99][exp.seed], cpu, at=1000.0 + exp.seed)
    cand = candidate(ledger, 0.8)
    if changes is not None:
        cand = ledger.put(attrs.evolve(cand, hypothesis=attrs.evolve(cand.hypothesis,
                                                                     changes=changes)))
    for exp, cpu in zip(schedule_baselines(ledger), [12.0], strict=True):
        done(ledger, exp, 1.0, cpu, at=9000.0)
    cand = done(ledger, cand, 0.8, cand_cpu[0], at=9010.0)
    promotion = Promotion(ledger, compute_kind=lambda name: "width" if name == "WIDTH" else "")
    promotion.judge()
    confirms = [e for e in ledger.experiments() if e.parent == cand.id]
    for i, (exp, cpu) in enumerate(zip(confirms, cand_cpu[1:], strict=True)):
        done(ledger, exp, 0.81 - 0.01 * i, cpu, at=9020.0 + 10 * i)
    for exp, cpu in zip(schedule_baselines(ledger), [12.6, 11.7], strict=True):
        done(ledger, exp, 1.0, cpu, at=9030.0 + exp.seed)
    promotion.judge()
    out = ledger.get(cand.id)
    assert out is not None
    return out


def test_an_honest_win_next_to_a_cpu_hog_is_not_held_for_cost(tmp_path: Path) -> None:
    out = win_next_to_loaded_baselines(tmp_path, [12.3, 11.8, 12.4])
    assert out.verdict == Verdict.PROMOTED, out.reason


def test_a_win_that_really_costs_30_percent_more_is_held(tmp_path: Path) -> None:
    out = win_next_to_loaded_baselines(tmp_path, [16.0, 15.4, 16.1])
    assert out.verdict == Verdict.NEEDS_EQUAL_COMPUTE, out.reason
    assert "more CPU per run than main" in (out.reason or "") and "limit 15%" in (out.reason or "")


def test_a_compute_knob_win_with_significantly_more_cpu_is_held_naming_the_knob(
        tmp_path: Path) -> None:
    out = win_next_to_loaded_baselines(tmp_path, [13.1, 12.9, 13.2], changes={"WIDTH": 16})
    assert out.verdict == Verdict.NEEDS_EQUAL_COMPUTE, out.reason
    assert "changes WIDTH (width) and costs" in (out.reason or "")

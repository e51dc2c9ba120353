"""Promotion policy over the pure statistics of :mod:`autolab.run.gate`.

What happens to a finished candidate: screen, confirmation seeds, verdict, hold for a human
(blocking anomaly flags) or for an equal-compute comparison, promotion to ``main`` (or a
re-run when main moved meanwhile), and a person's approval. Also the baseline runs of main
that measure the noise. It needs only the :class:`~autolab.run.ledger.Ledger`: no backend,
metric store or LLM, so ``autolab approve`` builds nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs

from autolab.lab_recovery import blocking_baseline_failures
from autolab.run import gate
from autolab.run.ledger import Ledger
from autolab_core.config import PromotionSection
from autolab_core.errors import LabError
from autolab_core.lab import BRANCH_PREFIX, RECORDS
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis
from autolab_core.vocab import Flag, FlagKind, Role, Verdict, needs_human

_DEAD = (ExperimentStatus.FAILED, ExperimentStatus.CANCELLED, ExperimentStatus.REJECTED)


def schedule_baselines(ledger: Ledger, run_started: float = 0.0) -> list[Experiment]:
    """Queue runs of main with fresh seeds: ``noise_runs`` to calibrate its noise, then one more
    after every ``baseline_every`` candidate runs on it (interleaved, so that candidates are
    compared with main measured under the same machine load); returns them.

    Raises :class:`LabError` when main itself keeps failing to run in this session (failures
    before ``run_started``, a ``time.time()``, stay in the records but are retried: the
    environment may have been fixed since).
    """
    config, lab = ledger.config, ledger.lab
    code = ledger.main_code()
    exps = ledger.experiments()
    mine = [e for e in exps if e.role == Role.BASELINE and e.base_code == code]
    have = [e for e in mine if e.status not in _DEAD]
    have_runs = len(gate.main_runs(exps, code))
    promoted_here = have_runs - len([e for e in have if e.status is ExperimentStatus.FINISHED])
    missing = baselines_wanted(exps, code, config.promotion) - len(have) - promoted_here
    broken = blocking_baseline_failures(exps, code, run_started)
    if missing > 0 and len(broken) >= config.promotion.noise_runs:
        raise LabError(
            f"main itself fails to run: {len(broken)} baseline runs failed, the last with: "
            f"{broken[-1].reason}. Fix the lab (try `python -m autolab_core.runner` settings by "
            f"running `{' '.join(config.run.argv())}` in {lab.root}), then run again"
        )
    queued = []
    for seed in gate.fresh_seeds(gate.seeds_used(exps, [code]), max(0, missing)):
        h = Hypothesis(id=f"baseline-{seed}", title=f"baseline: main, seed {seed}",
                       source="baseline")
        exp = ledger.new(h, Role.BASELINE, seed=seed)
        branch = f"{BRANCH_PREFIX}{exp.id}"
        commit = lab.create_branch(
            branch, exp.base_commit, {},
            f"autolab: baseline run {exp.id} of main at {exp.base_commit[:12]}, seed {seed}",
        )
        queued.append(ledger.put(attrs.evolve(
            exp, branch=branch, commit=commit, code_hash=exp.base_code,
            tree_hash=lab.tree_of(commit))))
    return queued


def baselines_wanted(exps: Sequence[Experiment], code: str, rules: PromotionSection) -> int:
    """How many runs should measure main at ``code`` by now: ``noise_runs``, plus one per
    ``baseline_every`` runs of candidates on it handed to the backend so far."""
    if not rules.baseline_every:
        return rules.noise_runs
    handed = [e for e in exps if e.role in (Role.CANDIDATE, Role.CONFIRM) and e.base_code == code
              and e.status not in (ExperimentStatus.QUEUED, ExperimentStatus.REJECTED)]
    return rules.noise_runs + len(handed) // rules.baseline_every


def calibrated_main_values(ledger: Ledger) -> tuple[str, list[float]] | None:
    """``(main's code hash, the metric values that measure its noise)`` once every baseline of
    the current main has ended and at least ``noise_runs`` values exist, else None."""
    code = ledger.main_code()
    exps = ledger.experiments()
    if any(e.role == Role.BASELINE and e.base_code == code and not e.done for e in exps):
        return None
    values = gate.values(gate.main_runs(exps, code))
    if len(values) < ledger.config.promotion.noise_runs:
        return None
    return code, values


class Promotion:
    """Verdicts on finished candidates, and promotion of confirmed wins to ``main``."""

    def __init__(self, ledger: Ledger, compute_kind: Callable[[str], str] | None = None) -> None:
        """``compute_kind(knob name)``: ``"steps"``, ``"batch"``, ``"width"``... or ``""``
        (:func:`autolab.agents.knobs.compute_kind`; passed in, this layer imports no agents)."""
        self.ledger = ledger
        self.config = ledger.config
        self.compute_kind = compute_kind or (lambda _name: "")

    def judge(self) -> None:
        """Give every finished candidate whose comparison is ready its verdict."""
        exps = self.ledger.experiments()
        rules, metric = self.config.promotion, self.config.metric.name
        noise = gate.pooled_noise(exps, rules.min_sigma)
        for cand in exps:
            if cand.role != Role.CANDIDATE or cand.verdict not in (None, Verdict.CONFIRMING):
                continue
            if cand.status is not ExperimentStatus.FINISHED:
                continue
            base = gate.values(gate.main_runs(exps, cand.base_code or ""))
            if len(base) < rules.noise_runs or noise is None:
                continue  # calibration still running
            sigma, df = noise
            runs = gate.runs_of(exps, cand.id)
            if cand.verdict is None:
                v = gate.judge(gate.values(runs), base, sigma, self.config.metric.dir, rules,
                               screen=True)
                if not v.passed:
                    self._verdict(cand, Verdict.NOT_BETTER, v, f"not better: {v.describe(metric)}")
                    continue
                seeds = gate.confirm_seeds(exps, cand, rules.confirm_runs)
                confirms = [self.ledger.put(self._confirm(cand, seed)) for seed in seeds]
                self._verdict(cand, Verdict.CONFIRMING, v,
                              f"passed the screen ({v.describe(metric)}); confirming with "
                              f"fresh seeds {', '.join(map(str, seeds))}", record=False)
                continue
            confirms = [e for e in exps if e.role == Role.CONFIRM and e.parent == cand.id]
            if not all(e.done for e in confirms):
                continue
            failed = [e.id for e in confirms if e.status is not ExperimentStatus.FINISHED]
            if failed:
                self._verdict(cand, Verdict.FAILED_CONFIRMATION, None,
                              f"confirmation runs {', '.join(failed)} did not finish")
                continue
            v = gate.judge(gate.values(runs), base, sigma, self.config.metric.dir, rules,
                           screen=False, df=df)
            if not v.passed:
                self._verdict(cand, Verdict.NOT_CONFIRMED, v, f"not confirmed: {v.describe(metric)}")
                continue
            self.promote(cand, runs, v, exps)

    def pending(self) -> bool:
        """A candidate still waits for its confirmation runs or its first verdict."""
        return any(e.role == Role.CANDIDATE and (
            e.verdict == Verdict.CONFIRMING
            or (e.status is ExperimentStatus.FINISHED and e.verdict is None))
            for e in self.ledger.experiments())

    def approve(self, exp_id: str, who: str) -> Experiment:
        """A person clears a flagged candidate; it is promoted if it still wins on main's code."""
        exps = self.ledger.experiments()
        cand = self.ledger.get(exp_id)
        if cand is None or cand.role != Role.CANDIDATE or cand.verdict != Verdict.NEEDS_REVIEW:
            raise LabError(f"{exp_id} is not a candidate waiting for review "
                           f"(its verdict: {cand.verdict if cand else 'no such experiment'})")
        runs = gate.runs_of(exps, cand.id)
        base = gate.values(gate.main_runs(exps, cand.base_code or ""))
        noise = gate.pooled_noise(exps, self.config.promotion.min_sigma)
        assert noise is not None
        v = gate.judge(gate.values(runs), base, noise[0], self.config.metric.dir,
                       self.config.promotion, screen=False, df=noise[1])
        approval = Flag(FlagKind.APPROVED, f"by {who}")
        cand = self.ledger.put(attrs.evolve(cand, flags=(*cand.flags, str(approval))))
        self.promote(cand, runs, v, exps, approved=True)
        self.ledger.flush_records()
        approved = self.ledger.get(exp_id)
        assert approved is not None
        return approved

    def promote(self, cand: Experiment, runs: Sequence[Experiment], v: gate.Verdict,
                exps: Sequence[Experiment], approved: bool = False) -> None:
        """Bring a confirmed win to ``main``, unless it must wait for a human or a re-run."""
        metric = self.config.metric.name
        flags = [f for e in runs for f in e.flags]
        if needs_human(flags) and not approved:
            self._verdict(cand, Verdict.NEEDS_REVIEW, v,
                          f"would be promoted ({v.describe(metric)}) but is flagged: "
                          f"{'; '.join(dict.fromkeys(flags))}. A human must approve it: "
                          f"`autolab approve {cand.id}`")
            return
        hold = self.cost_hold(cand, runs, exps)
        if hold:
            self._verdict(cand, Verdict.NEEDS_EQUAL_COMPUTE, v, f"wins ({v.describe(metric)}) {hold}")
            return
        main_code = self.ledger.main_code()
        if cand.base_code != main_code:
            self._revalidate(cand, v)
            return
        assert cand.commit is not None
        lab = self.ledger.lab
        new_files = lab.files_at(cand.commit, self.config.files.editable)
        before = gate.values(gate.main_runs(exps, cand.base_code or ""))
        message = promotion_message(cand, runs, v, metric, sum(before) / len(before))
        cand = attrs.evolve(cand, verdict=Verdict.PROMOTED, reason=v.describe(metric),
                            effect=v.effect, effect_err=v.err, n_runs=v.n)
        try:
            commit = lab.record_on_main(
                [cand, *[e for e in runs if e.id != cand.id]], message,
                extra_files=new_files, expect_code=(self.ledger.code_paths, main_code),
            )
        except LabError:
            self._revalidate(cand, v)
            return
        self.ledger.put(cand)
        self.ledger.say(f"[bold green]promoted[/] {cand.id} {cand.hypothesis.title}: "
                        f"{v.describe(metric)} -> main {commit[:12]}")
        self.ledger.hooks.change_promoted(cand, commit, v.effect)

    def cost_hold(self, cand: Experiment, runs: Sequence[Experiment],
                  exps: Sequence[Experiment]) -> str | None:
        """Why a win must be compared at equal compute before promotion, or None.

        Its CPU seconds per run are compared with those of the runs of main nearest in time
        (as many as main has calibration runs, or as the candidate has runs) by the noise-aware
        test of :func:`gate.compare_cost`. A significant increase holds the win when it changes
        a compute knob, or when the increase is over ``max_cost_increase``.
        """
        rules = self.config.promotion
        main = gate.main_runs(exps, cand.base_code or "")
        near = gate.nearest_in_time(main, runs, max(rules.noise_runs, len(runs)))
        cost = gate.compare_cost(_cpu(runs), _cpu(near), rules)
        if cost is None or not cost.significant:
            return None
        knobs = compute_knobs(cand.hypothesis.changes, self.compute_kind)
        if knobs:
            return (f"but changes {knobs} and costs {cost.describe()}; compare it at equal "
                    "compute (same CPU per run) before promoting")
        if cost.increase > rules.max_cost_increase:
            return (f"but costs {cost.describe()} (limit {100 * rules.max_cost_increase:.0f}%); "
                    "compare it at equal compute before promoting")
        return None

    def _confirm(self, cand: Experiment, seed: int) -> Experiment:
        exp = self.ledger.new(cand.hypothesis, Role.CONFIRM, seed=seed, parent=cand)
        return attrs.evolve(exp, base_commit=cand.base_commit, base_code=cand.base_code,
                            branch=cand.branch, commit=cand.commit, code_hash=cand.code_hash,
                            tree_hash=cand.tree_hash, patch=cand.patch)

    def _verdict(self, cand: Experiment, verdict: Verdict, v: gate.Verdict | None, note: str,
                 record: bool = True) -> Experiment:
        cand = self.ledger.put(attrs.evolve(
            cand, verdict=verdict, reason=note,
            effect=None if v is None else v.effect, effect_err=None if v is None else v.err,
            n_runs=cand.n_runs if v is None else v.n,
        ))
        self.ledger.say(f"{cand.id} {cand.hypothesis.title}: {note}")
        if record:
            self.ledger.record([cand], f"autolab: verdict on {cand.id}: {verdict}\n\n{note}")
        return cand

    def _revalidate(self, cand: Experiment, v: gate.Verdict) -> None:
        again = self.ledger.new(cand.hypothesis, Role.CANDIDATE, parent=cand)
        self._verdict(cand, Verdict.REVALIDATING, v,
                      f"won on an older main; re-running on the current main as {again.id}")
        self.ledger.put(again)


def compute_knobs(changes: Iterable[str], compute_kind: Callable[[str], str]) -> str:
    """The compute knobs among ``changes`` as ``"n_embd (width), max_iters (steps)"``, or ``""``."""
    found = [(name, compute_kind(name)) for name in changes]
    return ", ".join(f"{name} ({kind})" for name, kind in found if kind)


def _cpu(runs: Iterable[Experiment]) -> list[float]:
    return [c for c in map(gate.cpu_seconds, runs) if c is not None]


def promotion_message(cand: Experiment, runs: Sequence[Experiment], v: gate.Verdict,
                      metric: str, before: float) -> str:
    """The commit message of a promotion: the numbers, the runs, where the idea came from."""
    after = sum(gate.values(runs)) / len(runs)
    h = cand.hypothesis
    lines = [
        f"autolab: promote {cand.id}: {h.title}",
        "",
        f"{metric}: {before:.5g} -> {after:.5g} (improvement {v.effect:+.4g} ± {v.err:.2g}; "
        f"{v.n} runs vs {v.m} runs of main; threshold {v.threshold:.3g})",
        f"Experiment: {cand.id}, branch {cand.branch}, commit {cand.commit}",
        f"Runs: {', '.join(f'{e.id} (seed {e.seed})' for e in runs)}",
        f"Source: {h.source}" + (f"; citation: {h.citation}" if h.citation else ""),
    ]
    if h.conversation_id:
        lines.append(f"Conversation: {RECORDS}/conversations/{h.conversation_id}.json")
    hardware = runs[0].hardware if runs else {}
    if hardware:
        lines.append("Hardware: " + ", ".join(f"{k}={v}" for k, v in sorted(hardware.items())))
    return "\n".join(lines)

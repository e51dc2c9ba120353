"""Jobs: the run spec of an experiment, submission, following logs, finishing.

The run spec is built in one place (:func:`run_spec`) and the runner's output is read in one
place (:func:`parse_output`, with :func:`parse_result_line` for the nonce'd result line), so
the typed job protocol of ``autolab_core`` can replace both without touching the loop.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from rich.markup import escape as rich_escape

from autolab.lab_recovery import OutputTail, failure_reason
from autolab.reporting.status import with_wait_reason
from autolab.run.budget import Budget, OverBudget
from autolab.run.ledger import Ledger
from autolab.seed_check import seed_env, seeded_argv
from autolab_core.config import Config, resolve_python
from autolab_core.interfaces import JobBackend, MetricStore
from autolab_core.metriclines import RESULT_PREFIX, parse_metric_line
from autolab_core.models import (
    Experiment,
    ExperimentStatus,
    JobSpec,
    JobState,
    JobStatus,
    MetricPoint,
    Result,
)
from autolab_core.vocab import Flag, kinds

_JOB_TO_EXP = {
    JobStatus.SUCCEEDED: ExperimentStatus.FINISHED,
    JobStatus.CANCELLED: ExperimentStatus.CANCELLED,
}


def run_spec(exp: Experiment, config: Config, eval_hash: str) -> dict[str, Any]:
    """What the runner (``python -m autolab_core.runner``) must do for ``exp``."""
    return {
        "experiment_id": exp.id,
        "train": list(seeded_argv(config.run.argv(), exp.seed)),
        "eval": list(config.run.eval_argv() or []) or None,
        "protected": list(config.files.protected),
        "eval_hash": eval_hash,
        "metric": config.metric.name,
        "pattern": config.metric.pattern,
        "results_file": config.metric.results_file,
        "seed_env": config.run.seed_env,
        "seed": exp.seed,
        # The interpreter whose bin directory the runner puts first on PATH (None: its own).
        "python": None if config.run.python is None else resolve_python(config.run.python),
    }


def parse_result_line(line: str, nonce: str | None) -> Result | None:
    """The :class:`Result` of an ``AUTOLAB_RESULT`` line carrying ``nonce``, else None."""
    if not line.startswith(RESULT_PREFIX) or nonce is None:
        return None
    payload = _json_tail(line)
    if not payload or payload.get("nonce") != nonce:
        return None  # printed by the patch, not by the runner of this run
    extra = dict(payload.get("extra") or {})
    if payload.get("train_cpu_seconds") is not None:
        extra["train_cpu_seconds"] = float(payload["train_cpu_seconds"])
    return Result(
        metric=str(payload["metric"]), value=float(payload["value"]),
        seed=int(payload.get("seed", 0)), train_seconds=payload.get("train_seconds"),
        eval_hash=payload.get("eval_hash"), trusted=bool(payload.get("trusted", True)),
        extra=extra,
    )


@attrs.define
class JobOutput:
    """What a stretch of a job's log says."""

    points: list[MetricPoint] = attrs.field(factory=list)
    updates: dict[str, Any] = attrs.field(factory=dict)  # hardware, reason, result


def parse_output(exp: Experiment, text: str) -> JobOutput:
    """Metric points, hardware, runner errors and the result in ``text`` (runner lines)."""
    out = JobOutput()
    for line in text.splitlines():
        parsed = parse_metric_line(line)
        if parsed is not None:
            step, values = parsed
            out.points += [MetricPoint(exp.id, step, k, v) for k, v in values.items()]
        elif line.startswith("AUTOLAB_HARDWARE "):
            out.updates["hardware"] = _json_tail(line) or {}
        elif line.startswith("AUTOLAB_ERROR "):
            out.updates["reason"] = (_json_tail(line) or {}).get("reason", line)
        else:
            result = parse_result_line(line, exp.nonce)
            if result is not None:
                out.updates["result"] = result
    return out


class Jobs:
    """Submits experiments to the backend and follows them until they end."""

    def __init__(self, ledger: Ledger, backend: JobBackend, store: MetricStore,
                 reporter: Any = None) -> None:
        self.ledger = ledger
        self.lab = ledger.lab
        self.config = ledger.config
        self.backend = backend
        self.store = store
        self.reporter = reporter
        self.budget = Budget(self.config.budget.usd, self.lab.state_dir / "budget.json")
        self.budget_refusal: str | None = None  # why the last job was refused for money

    def worktree(self, exp: Experiment) -> Path:
        """Where ``exp``'s checkout lives while it runs."""
        return self.lab.state_dir / "worktrees" / exp.id

    def housekeeping(self, ahead: int) -> bool:
        """One worktree chore, off the loop's thread; False when there was none.

        Removes the checkout of an ended experiment (failed ones stay for a post-mortem), or
        checks out one of the next ``ahead`` ready experiments so that submitting it is fast.
        """
        for exp in self.ledger.experiments():
            if exp.done and exp.status is not ExperimentStatus.FAILED and self.worktree(exp).exists():
                self.lab.remove_worktree(self.worktree(exp))
                return True
        main_code = self.ledger.main_code()
        for exp in self.ledger.ready()[:ahead]:
            if exp.commit and exp.base_code == main_code and not self.worktree(exp).exists():
                self.lab.add_worktree(self.worktree(exp), exp.commit)
                return True
        return False

    def job_spec(self, exp: Experiment) -> JobSpec:
        """The backend's job for ``exp`` (checks out its commit)."""
        assert exp.commit is not None and exp.nonce is not None
        workdir = self.lab.add_worktree(self.worktree(exp), exp.commit)
        cfg = self.config
        spec = run_spec(exp, cfg, self.lab.files_hash(exp.base_commit, cfg.files.protected))
        return JobSpec(
            experiment_id=exp.id,
            command=(sys.executable, "-m", "autolab_core.runner"),
            workdir=str(workdir),
            env={
                **cfg.run.env,
                **seed_env(exp.seed, cfg.run.seed_env),
                "AUTOLAB_RUN_SPEC": json.dumps(spec),
                "AUTOLAB_RESULT_NONCE": exp.nonce,
                "AUTOLAB_EXPERIMENT_ID": exp.id,
            },
            time_limit_s=cfg.run.time_limit,
            commit=exp.commit,
            branch=exp.branch,
            labels={"autolab-lab": cfg.name, "autolab-experiment": exp.id},
            resources=dict(exp.hypothesis.resources),  # this experiment's, over the backend's
            requirements=tuple(cfg.run.requirements),
        )

    def submit(self, exp: Experiment) -> Experiment:
        """Hand ``exp`` to the backend (see :meth:`submit_many`)."""
        return self.submit_many([exp])[0]

    def submit_many(self, exps: list[Experiment]) -> list[Experiment]:
        """Hand ``exps`` to the backend in one ``submit_many`` call (a SLURM job array).

        Each job's cost estimate is reserved in the budget first. One that could cross
        ``[budget] usd`` is rejected with the reason, or, while other jobs hold reservations
        that may yet be freed, left ready for a later turn (:class:`~autolab.run.budget.OverBudget`).
        Returns the experiments as they are now, in order.
        """
        out: dict[str, Experiment] = {}
        wave: list[tuple[Experiment, JobSpec]] = []
        for exp in exps:
            exp = attrs.evolve(exp, nonce=exp.nonce or secrets.token_hex(16),
                               attempts=exp.attempts + 1)
            if self.budget_refusal:  # one refusal stops the run: the others stay ready
                out[exp.id] = exp
                continue
            spec = self.job_spec(exp)
            try:
                estimate = (self.backend.estimate_cost(spec)
                            if self.budget.limit_usd is not None else None)
                self.budget.reserve(exp.id, float(estimate or 0.0))
            except OverBudget as exc:
                out[exp.id] = self._over_budget(exp, str(exc))
                continue
            wave.append((exp, spec))
        if wave:
            self._hand_over(wave)
        return [out.get(e.id) or self.ledger.get(e.id) or e for e in exps]

    def _over_budget(self, exp: Experiment, reason: str) -> Experiment:
        if self.budget.totals()["reserved"] > 0:  # jobs in flight may cost less than reserved
            return exp
        self.budget_refusal = reason  # nothing in flight: the money left cannot pay for it
        return self.ledger.reject(exp, reason)

    def _hand_over(self, wave: list[tuple[Experiment, JobSpec]]) -> None:
        exps = []
        for exp, _spec in wave:
            exp = self.ledger.put(exp.with_status(ExperimentStatus.SUBMITTED))  # before: crash-safe
            h = exp.hypothesis
            self.store.start(exp.id, config={
                "title": h.title, "role": exp.role, "seed": exp.seed, "source": h.source,
                "citation": h.citation, **{f"knob.{k}": v for k, v in h.changes.items()},
                **{f"resource.{k}": v for k, v in h.resources.items()},
            }, group=self.config.name)
            exps.append(exp)
        try:
            handles = self.backend.submit_many([spec for _exp, spec in wave])
        except BaseException:
            for exp in exps:
                self.budget.release(exp.id)
            raise
        for exp, handle in zip(exps, handles, strict=True):
            exp = self.ledger.put(attrs.evolve(exp, handle=handle, slot=self.backend.slot_of(handle)))
            self.ledger.say(f"[cyan]submitted[/] {exp.id} ({exp.role}, seed {exp.seed}) "
                            f"{exp.hypothesis.title}")

    def reattach(self) -> list[Experiment]:
        """After a restart: take over jobs a previous session submitted; returns those lost."""
        lost = []
        for exp in self.ledger.running():
            handle = exp.handle
            again = (self.backend.reattach(handle.job_id) if handle is not None
                     else self.backend.find(exp.id))
            if again is not None:
                self.ledger.put(attrs.evolve(exp, handle=again))
                self.ledger.say(f"reattached {exp.id} (job {again.job_id})")
            elif handle is None:
                # Recorded as submitting, but the backend never got it: submit it again.
                self.ledger.put(attrs.evolve(exp, history=exp.history[:-1]))
            else:
                lost.append(self.finish(exp, JobState(JobStatus.UNKNOWN,
                                                      reason="the backend lost the job")))
        return lost

    def poll(self) -> list[Experiment]:
        """Read new output of every running job; returns the experiments that ended."""
        running = [e for e in self.ledger.running() if e.handle is not None]
        if not running:
            return []
        states = self.backend.poll([e.handle for e in running if e.handle is not None])
        ended = []
        for exp in running:
            assert exp.handle is not None
            state = states.get(exp.handle.job_id)
            if state is None:
                continue
            waiting = with_wait_reason(exp, state)  # SLURM's pending reason, for `autolab status`
            if waiting is not exp:
                exp = self.ledger.put(waiting)
            if state.status is not JobStatus.PENDING and exp.status is ExperimentStatus.SUBMITTED:
                slot = state.hardware.get("slot") or exp.slot  # known once a queued job starts
                exp = self.ledger.put(attrs.evolve(exp, slot=slot).with_status(
                    ExperimentStatus.STARTED, at=state.started_at))
            exp = self.read_logs(exp, final=state.status.terminal)
            if state.status.terminal:
                ended.append(self.finish(exp, state))
        if self.reporter is not None:
            self.review()
        return ended

    def cancel_running(self) -> None:
        for exp in self.ledger.running():
            if exp.handle is not None:
                self.backend.cancel(exp.handle)

    def review(self) -> None:
        """The Reporter's look at running jobs: flag anomalies, prune hopeless candidates."""
        assert self.reporter is not None
        found = self.reporter.tick(self.ledger.experiments())
        for exp_id, new in found.flags.items():
            exp = self.ledger.get(exp_id)
            assert exp is not None
            flags = _new_flags(exp.flags, new)
            if not flags:
                continue
            exp = self.ledger.put(attrs.evolve(exp, flags=(*exp.flags, *flags)))
            for flag in flags:
                self.ledger.say(f"[yellow]anomaly[/] {exp_id}: {flag}")
                self.ledger.hooks.anomaly(exp, Flag.parse(flag))
        for exp_id, reason in found.prunes.items():
            pruned = self.ledger.get(exp_id)
            if pruned is not None and pruned.handle is not None and not pruned.done:
                self.backend.cancel(pruned.handle)
                self.ledger.put(attrs.evolve(pruned, reason=reason))
                self.ledger.say(f"[yellow]{reason}[/] ({exp_id})")

    def read_logs(self, exp: Experiment, final: bool) -> Experiment:
        """Take in the job's new output: metric points to the store, result to the record."""
        assert exp.handle is not None
        points: list[MetricPoint] = []
        empty_reads = 0
        while True:
            chunk = self.backend.logs(exp.handle, exp.log_cursor)
            out = parse_output(exp, chunk.text)
            points += out.points
            exp = attrs.evolve(exp, log_cursor=chunk.cursor, **out.updates)
            if chunk.text:
                continue
            # A finished job's last lines can reach a remote log a moment late.
            empty_reads += 1
            if not final or exp.result is not None or empty_reads >= 4:
                break
            time.sleep(0.25)
        points += self.backend.system_metrics(exp.handle)  # GPU use, where the backend measures it
        if points:
            self.store.append(points)
        return self.ledger.put(exp)

    def finish(self, exp: Experiment, state: JobState) -> Experiment:
        """Give an ended job's experiment its final status, record it and tell the plugins."""
        self.store.finish(exp.id)
        hardware = {**state.hardware, **exp.hardware}
        if state.hardware.get("slot"):
            exp = attrs.evolve(exp, slot=state.hardware["slot"])
        cost = state.cost_usd or 0.0
        self.budget.settle(exp.id, cost)  # the real cost replaces the reserved estimate
        if state.status is JobStatus.SUCCEEDED and exp.result is not None:
            exp = attrs.evolve(exp, hardware=hardware, cost_usd=cost,
                               eval_hash=exp.result.eval_hash)
            exp = exp.with_status(ExperimentStatus.FINISHED, at=state.finished_at)
        else:
            exp = _failed(exp, state, hardware, cost)
            if exp.status is ExperimentStatus.FAILED:
                exp = self._with_output_tail(exp)
        if self.reporter is not None:
            found = self.reporter.flags_on_finish(exp, state, self.ledger.experiments())
            flags = _new_flags(exp.flags, found)
            exp = attrs.evolve(exp, flags=(*exp.flags, *flags))
            for flag in flags:
                self.ledger.hooks.anomaly(exp, Flag.parse(flag))
        self.ledger.put(exp)
        if exp.status is ExperimentStatus.FINISHED:
            assert exp.result is not None
            self.ledger.say(f"[green]finished[/] {exp.id} {self.config.metric.name}="
                            f"{exp.result.value:.4f} ({exp.role}) {exp.hypothesis.title}")
        else:
            self.ledger.say(f"[red]{exp.status.value}[/] {exp.id} {exp.hypothesis.title}: "
                            f"{rich_escape(exp.reason or '')}")
        self.ledger.record([exp], f"autolab: record {exp.id} ({exp.status.value}): "
                                  f"{exp.hypothesis.title}")
        self.ledger.hooks.experiment_finished(exp)
        return exp

    def _with_output_tail(self, exp: Experiment) -> Experiment:
        """``exp`` whose reason shows the cause and the last lines the job printed (scrubbed)."""
        if exp.handle is None:
            return exp
        tail = OutputTail()
        try:
            tail.feed(self.backend.logs(exp.handle, 0).text)
        except Exception as exc:  # a lost log must not lose the verdict
            tail.feed(f"(could not read the job's output: {exc})\n")
        return attrs.evolve(exp, reason=failure_reason(exp.reason or "failed", tail.lines()))


def _failed(exp: Experiment, state: JobState, hardware: Mapping[str, Any],
            cost: float) -> Experiment:
    pruned = exp.reason is not None and exp.reason.startswith("pruned")
    status = (ExperimentStatus.PRUNED if pruned else
              _JOB_TO_EXP.get(state.status, ExperimentStatus.FAILED))
    reason = exp.reason or state.reason or state.status.value
    if state.status is JobStatus.SUCCEEDED:
        reason = exp.reason or "the job succeeded but printed no result line"
    if status is ExperimentStatus.FAILED and state.status is not JobStatus.FAILED:
        reason = f"{state.status.value}: {reason}"
    exp = attrs.evolve(exp, hardware=dict(hardware), cost_usd=cost, reason=reason,
                       verdict=status.value)
    return exp.with_status(status, reason, at=state.finished_at)


def _new_flags(have: tuple[str, ...], new: list[str]) -> list[str]:
    """Flags of kinds not reported on this experiment yet (one report per kind)."""
    seen = kinds(have)
    return [f for f in new if Flag.parse(f).kind not in seen]


def _json_tail(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line.split(" ", 1)[1])
    except (IndexError, ValueError):
        return None
    return value if isinstance(value, dict) else None


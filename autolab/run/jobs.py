"""Jobs: the run spec of an experiment, submission, following logs, finishing.

The run spec is built in one place (:func:`autolab.run.runspec.run_spec`, over ``guard.run_spec``)
and the runner's output is read in one place (:func:`parse_output`, which checks the run's one
HMAC-signed result line with :func:`autolab_core.job.parse_result`). A job runs in an exported
tree of its commit (no ``.git``), in the strongest sandbox the machine offers; its result key
reaches it on stdin (backends with ``takes_stdin``) or, weaker, as the secret
``AUTOLAB_RESULT_KEY``, and is never stored: it is derived again from the lab's master key.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from rich.markup import escape as rich_escape

from autolab.lab_recovery import OutputTail, failure_reason
from autolab.reporting.status import with_wait_reason
from autolab.run.budget import Budget, OverBudget
from autolab.run.ledger import Ledger
from autolab.run.runspec import failed_outcome, is_pruned, run_spec, to_result
from autolab.seed_check import ignored_seed, seed_env
from autolab_core import guard
from autolab_core.interfaces import JobBackend, MetricStore
from autolab_core.job import ResultError, parse_result, scan_results
from autolab_core.metriclines import parse_metric_line
from autolab_core.models import (
    Experiment,
    ExperimentStatus,
    JobSpec,
    JobState,
    JobStatus,
    MetricPoint,
)
from autolab_core.runner import KEY_ENV
from autolab_core.vocab import Flag, FlagKind, kinds


@attrs.define
class JobOutput:
    """What a stretch of a job's log says."""

    points: list[MetricPoint] = attrs.field(factory=list)
    updates: dict[str, Any] = attrs.field(factory=dict)  # hardware, reason, result
    forged: tuple[str, ...] = ()  # result lines without the run's signature
    result_error: str | None = None  # why the whole log holds no acceptable result


def parse_output(exp: Experiment, text: str, key: bytes | None = None) -> JobOutput:
    """Metric points, hardware and runner errors in ``text`` (runner lines). With ``key``
    (``text`` is then the whole log of an ended job), also its one signed result: exactly one
    line signed under ``key`` for this experiment is accepted, others are reported as forged."""
    out = JobOutput()
    for line in text.splitlines():
        parsed = parse_metric_line(line)
        if parsed is not None:
            step, values = parsed
            out.points += [MetricPoint(exp.id, step, k, v) for k, v in values.items()]
        elif line.startswith("AUTOLAB_HARDWARE "):
            out.updates["hardware"] = _json_tail(line) or {}
        elif line.startswith("AUTOLAB_ERROR ") and not is_pruned(exp):
            # a pruned job's "training exited with code -15" must not hide why it was stopped
            out.updates["reason"] = (_json_tail(line) or {}).get("reason", line)
    if key is not None:
        out.forged = scan_results(text, key, exp.id).forged
        try:
            run = parse_result(text, key, exp.id)
        except ResultError as exc:
            out.result_error = exc.reason
        else:
            out.updates["result"] = to_result(run)
            out.updates["hardware"] = {**out.updates.get("hardware", {}),
                                       "isolation": run.isolation}  # as signed
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

    def workdir(self, exp: Experiment) -> Path:
        """Where ``exp``'s exported tree lives while it runs (in the lab's state directory, so
        a cluster backend finds it on shared storage; the sandbox hides it from other jobs)."""
        return self.lab.state_dir / "jobs" / exp.id

    def housekeeping(self, ahead: int) -> bool:
        """One checkout chore, off the loop's thread; False when there was none: removes the
        exported tree of an ended experiment (failed ones stay for a post-mortem)."""
        del ahead  # trees are exported fresh at submission: a job cannot prepare another's
        for exp in self.ledger.experiments():
            if exp.done and exp.status is not ExperimentStatus.FAILED and self.workdir(exp).exists():
                shutil.rmtree(self.workdir(exp), ignore_errors=True)
                return True
        return False

    def key(self, exp: Experiment) -> bytes:
        """The result key of ``exp``'s current attempt (derived, never stored)."""
        return guard.run_key(self.lab, exp.id, exp.attempts)

    def job_spec(self, exp: Experiment) -> JobSpec:
        """The backend's job for ``exp``: an exported tree of its commit, the run spec, and
        the result key on stdin (or, where the backend cannot pass stdin, in a secret env)."""
        assert exp.commit is not None
        spec = run_spec(self.lab, exp)
        workdir = self.lab.export_tree(exp.commit, self.workdir(exp))
        key = self.key(exp)
        cfg = self.config
        command: tuple[str, ...] = (sys.executable, "-m", "autolab_core.runner")
        env = {**cfg.run.env, **seed_env(exp.seed, cfg.run.seed_env),
               "AUTOLAB_RUN_SPEC": spec.to_json(), "AUTOLAB_EXPERIMENT_ID": exp.id}
        if self.backend.takes_stdin:
            command, stdin = (*command, "--key-stdin"), key + b"\n"
        else:  # the runner moves it into a pipe and re-executes before lab code starts
            env[KEY_ENV], stdin = key.decode(), None
        return JobSpec(
            experiment_id=exp.id, command=command, workdir=str(workdir), env=env,
            time_limit_s=cfg.run.time_limit, commit=exp.commit, branch=exp.branch,
            labels={"autolab-lab": cfg.name, "autolab-experiment": exp.id},
            resources=dict(exp.hypothesis.resources),  # this experiment's, over the backend's
            requirements=tuple(cfg.run.requirements), stdin=stdin,
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
            exp = attrs.evolve(exp, attempts=exp.attempts + 1)
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
        """Take in the job's new output: metric points to the store; once the job ended, its
        one signed result (or why there is none, and any forged result lines) to the record."""
        assert exp.handle is not None
        points: list[MetricPoint] = []
        while True:
            chunk = self.backend.logs(exp.handle, exp.log_cursor)
            out = parse_output(exp, chunk.text)
            points += out.points
            exp = attrs.evolve(exp, log_cursor=chunk.cursor, **out.updates)
            if not chunk.text:
                break
        points += self.backend.system_metrics(exp.handle)  # GPU use, where the backend measures it
        if points:
            self.store.append(points)
        if final:
            exp = self._take_result(exp)
        return self.ledger.put(exp)

    def _take_result(self, exp: Experiment) -> Experiment:
        """Check the whole log of an ended job for its signed result."""
        assert exp.handle is not None
        key = self.key(exp)
        for attempt in range(4):
            # A finished job's last lines can reach a remote log a moment late.
            out = parse_output(exp, self.backend.logs(exp.handle, 0).text, key)
            if "result" in out.updates or out.forged or attempt == 3:
                break
            time.sleep(0.25)
        updates = {k: v for k, v in out.updates.items() if k in ("result", "hardware")}
        exp = attrs.evolve(exp, **updates)
        if out.result_error is not None and exp.reason is None:
            exp = attrs.evolve(exp, reason=out.result_error)
        if out.forged:
            flag = str(Flag(FlagKind.FORGED_RESULT,
                            f"{len(out.forged)} result line(s) not signed by this run's runner "
                            f"(printed by the patch?): {out.forged[0][:160]}"))
            if _new_flags(exp.flags, [flag]):
                exp = attrs.evolve(exp, flags=(*exp.flags, flag))
                self.ledger.say(f"[red]forged result[/] {exp.id}: {rich_escape(flag)}")
                self.ledger.hooks.anomaly(exp, Flag.parse(flag))
        return exp

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
            exp = failed_outcome(exp, state, hardware, cost)
            if exp.status is ExperimentStatus.FAILED:
                exp = self._with_output_tail(exp)
        if self.reporter is not None:
            found = self.reporter.flags_on_finish(exp, state, self.ledger.experiments())
            flags = _new_flags(exp.flags, found)
            exp = attrs.evolve(exp, flags=(*exp.flags, *flags))
            for flag in flags:
                self.ledger.hooks.anomaly(exp, Flag.parse(flag))
        exp = self._seed_check(exp)
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

    def _seed_check(self, exp: Experiment) -> Experiment:
        """Flag (blocking) a run whose value repeats, bit for bit, a run of the same code on
        another seed, and its candidate too: a fixed seed must not pass as a confirmed win."""
        why = ignored_seed(exp, self.ledger.experiments())
        flag = str(Flag(FlagKind.SEED_IGNORED, why or ""))
        parent = self.ledger.get(exp.parent) if why and exp.parent else None
        if parent is not None and _new_flags(parent.flags, [flag]):
            self.ledger.put(attrs.evolve(parent, flags=(*parent.flags, flag)))
        if why and _new_flags(exp.flags, [flag]):
            exp = attrs.evolve(exp, flags=(*exp.flags, flag))
            self.ledger.hooks.anomaly(exp, Flag.parse(flag))
            self.ledger.say(f"[yellow]anomaly[/] {exp.id}: {rich_escape(flag)}")
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


"""``autolab run``: the four roles working on one lab until a budget or the user stops them.

- The *Researcher* and the patch-writing half of the *Worker* run in a background thread
  (:class:`ProposalPipeline`), so slow LLM calls never leave a slot idle: it keeps a queue of
  ready experiments (a branch with one commit each) deeper than the number of slots.
- The *Planner* checks every idea twice on its way into that queue (``agents.planner``).
- The main loop submits ready experiments to the backend whenever a slot is free, and acts as
  the *Reporter*: it follows each job's log stream, writes metric points to the metric store
  (it is the store's single writer), flags anomalies, and judges finished runs with the noise
  gate (``autolab.gate``), promoting confirmed wins to ``main``.

Every state change is written to the lab's state directory before it is acted on, and every
verdict is committed to ``main``'s records, so a crashed or interrupted run resumes where it
stopped: running jobs are reattached, queued experiments are submitted, nothing runs twice.
"""

from __future__ import annotations

import json
import py_compile
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autolab import gate
from autolab.agents.base import LabDigest, PatchWriter, Proposer
from autolab.agents.planner import check_code, check_hypothesis
from autolab.reporting.anomalies import needs_human
from autolab_core.errors import AutolabError, BudgetExceeded, LabError, LLMError, PatchError
from autolab_core.hashing import content_hash
from autolab_core.interfaces import JobBackend, MetricStore
from autolab_core.lab import BRANCH_PREFIX, RECORDS, Lab
from autolab_core.metriclines import RESULT_PREFIX, parse_metric_line
from autolab_core.models import (
    Experiment,
    ExperimentStatus,
    Hypothesis,
    JobSpec,
    JobState,
    JobStatus,
    MetricPoint,
    Result,
)
from autolab_core.plugins import PluginManager

Say = Callable[[str], None]
_JOB_TO_EXP = {
    JobStatus.SUCCEEDED: ExperimentStatus.FINISHED,
    JobStatus.CANCELLED: ExperimentStatus.CANCELLED,
}


@attrs.define
class RunOptions:
    """How long and how wide a session runs."""

    workers: int = 1
    max_experiments: int | None = None  # candidate experiments started in this session
    time_s: float | None = None
    on_stop: str = "finish"  # "finish": let running jobs end; "cancel"; "detach": leave them
    poll_interval: float = 0.5
    queue_depth: int | None = None
    # Jobs handed to a backend that queues them itself (one with `capacity`, like `local`)
    # beyond its free slots, so a freed slot starts the next job without waiting for a poll.
    prefetch: int = 1
    max_patch_lines: int = 200


class Orchestrator:
    """Runs the lab. Build it with :func:`autolab.session.build_orchestrator`."""

    def __init__(
        self,
        lab: Lab,
        backend: JobBackend,
        store: MetricStore,
        proposer: Proposer,
        writer: PatchWriter,
        options: RunOptions,
        plugins: PluginManager | None = None,
        say: Say = print,
        reporter: Any = None,
        fallback: tuple[Proposer, PatchWriter] | None = None,
    ) -> None:
        self.lab = lab
        self.config = lab.config
        self.backend = backend
        self.store = store
        self.proposer = proposer
        self.writer = writer
        self.fallback = fallback
        self.options = options
        self.plugins = plugins
        self.say = say
        self.reporter = reporter
        self.code_paths = sorted({*self.config.files.editable, *self.config.files.protected})
        self.capacity = backend.capacity or options.workers
        self.depth = options.queue_depth or self.config.search.queue_depth or self.capacity + 2
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._interrupts = 0
        self.exps: dict[str, Experiment] = {e.id: e for e in lab.load_experiments()}
        self.started_candidates = 0
        self.started_at = time.time()
        self.exhausted = False
        self._pipeline: ProposalPipeline | None = None
        self._unrecorded: dict[str, str] = {}
        self._code_cache: tuple[str, str] | None = None
        self._changed = True  # something finished: main may need new baseline runs
        self._last_progress = time.time()

    # -- snapshot helpers --------------------------------------------------------------------
    def experiments(self) -> list[Experiment]:
        with self._lock:
            return sorted(self.exps.values(), key=lambda e: e.id)

    def _put(self, exp: Experiment) -> Experiment:
        with self._lock:
            self.lab.save_experiment(exp)
            self.exps[exp.id] = exp
        return exp

    def main_code(self) -> str:
        """The hash of main's code files (cached per main commit)."""
        main = self.lab.main_commit()
        cached = self._code_cache
        if cached is None or cached[0] != main:
            cached = self._code_cache = (main, self.lab.files_hash(main, self.code_paths))
        return cached[1]

    def digest(self) -> LabDigest:
        main = self.lab.main_commit()
        code = self.lab.files_hash(main, self.code_paths)
        exps = self.experiments()
        main_values = gate.values(gate.main_runs(exps, code))
        return LabDigest(
            metric=self.config.metric.name,
            direction=self.config.metric.dir,
            files=self.lab.files_at(main, self.config.files.editable),
            experiments=exps,
            best_value=sum(main_values) / len(main_values) if main_values else None,
            sigma=gate.pooled_sigma(exps, self.config.promotion.min_sigma),
            main_commit=main,
            code_hash=code,
        )

    # -- creating experiments ----------------------------------------------------------------
    def _new(self, hypothesis: Hypothesis, role: str, seed: int = 0,
             parent: Experiment | None = None) -> Experiment:
        exp_id = self.lab.new_experiment_id()
        main = self.lab.main_commit()
        return Experiment(
            id=exp_id, hypothesis=hypothesis, base_commit=main,
            base_code=self.lab.files_hash(main, self.code_paths),
            branch="", role=role, seed=seed, parent=parent.id if parent else None,
        ).with_status(ExperimentStatus.QUEUED)

    def reject(self, exp: Experiment, reason: str) -> Experiment:
        exp = attrs.evolve(exp, reason=reason, verdict="rejected").with_status(
            ExperimentStatus.REJECTED, reason
        )
        self._put(exp)
        self.say(f"[yellow]rejected[/] {exp.id} {exp.hypothesis.title}: {reason}")
        self._record([exp], f"autolab: reject {exp.id}: {exp.hypothesis.title}\n\n{reason}")
        return exp

    def materialize(self, exp: Experiment, writer: PatchWriter | None = None) -> Experiment | None:
        """Write the patch for a queued candidate and commit it on its branch (or reject)."""
        files = self.lab.files_at(exp.base_commit, self.config.files.editable)
        writer = writer or self.writer
        try:
            new_files = writer.write_patch(exp.hypothesis, files)
            self._validate(files, new_files)
        except PatchError as exc:
            self.reject(exp, f"invalid patch: {exc}")
            return None
        written = getattr(writer, "last_result", None)  # an LLM worker's edits, for the record
        if written is not None and getattr(written, "edits", None):
            exp = attrs.evolve(exp, hypothesis=attrs.evolve(
                exp.hypothesis, edits=tuple(dict(e) for e in written.edits)))
        all_code = self.lab.files_at(exp.base_commit, self.code_paths)
        code_hash = content_hash({**all_code, **new_files})
        why = check_code(code_hash, self.experiments(), exp.base_code or "", exp.id)
        if why:
            self.reject(exp, why)
            return None
        branch = f"{BRANCH_PREFIX}{exp.id}"
        message = _branch_message(exp)
        if self.lab.branch_exists(branch):  # rebasing onto a newer main
            commit = self.lab.rebase_branch(branch, exp.base_commit, new_files, message)
        else:
            commit = self.lab.create_branch(branch, exp.base_commit, new_files, message)
        failure = self._smoke(exp, commit)
        if failure:
            self.reject(attrs.evolve(exp, branch=branch, commit=commit, code_hash=code_hash),
                        failure)
            return None
        exp = attrs.evolve(
            exp, branch=branch, commit=commit, code_hash=code_hash,
            tree_hash=self.lab.tree_of(commit), patch=self.lab.diff(exp.base_commit, commit),
        )
        return self._put(exp)

    def _smoke(self, exp: Experiment, commit: str) -> str | None:
        """Run the patched training briefly here before a remote backend gets it."""
        search = self.config.search
        if search.smoke == "never" or (search.smoke == "remote" and self.backend.name == "local"):
            return None
        from autolab.agents.edits import smoke_run

        path = self.lab.state_dir / "smoke" / exp.id
        self.lab.add_worktree(path, commit)
        try:
            out = path / ".autolab-out"
            out.mkdir(exist_ok=True)
            env = {self.config.run.seed_env: "0", "AUTOLAB_OUTPUT_DIR": str(out),
                   **self.config.run.env, **search.smoke_env}
            result = smoke_run(path, self.config.run.argv(), env, search.smoke_seconds)
        finally:
            self.lab.remove_worktree(path)
        return None if result.ok else f"smoke run failed: {result.reason}"

    def _validate(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        editable = set(self.config.files.editable)
        outside = sorted(set(new) - editable)
        if outside:
            raise PatchError(f"touches files that are not editable: {', '.join(outside)}")
        if all(old.get(p) == c for p, c in new.items()):
            raise PatchError("the edit changes nothing")
        changed = sum(
            len(set(c.splitlines()) ^ set(old.get(p, "").splitlines())) for p, c in new.items()
        )
        if changed > self.options.max_patch_lines:
            raise PatchError(f"changes {changed} lines; the limit is {self.options.max_patch_lines}")
        for path, content in new.items():
            if path.endswith(".py"):
                with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
                    fh.write(content)
                try:
                    py_compile.compile(fh.name, doraise=True)
                except py_compile.PyCompileError as exc:
                    raise PatchError(f"{path} no longer compiles: {exc.msg}") from None
                finally:
                    Path(fh.name).unlink(missing_ok=True)

    def add_baselines(self) -> None:
        """Queue runs of main with new seeds until its noise is calibrated."""
        code = self.main_code()
        exps = self.experiments()
        have = [e for e in exps if e.role == "baseline" and e.base_code == code
                and e.status not in (ExperimentStatus.FAILED, ExperimentStatus.CANCELLED,
                                     ExperimentStatus.REJECTED)]
        have_runs = len(gate.main_runs(exps, code))
        promoted_here = have_runs - len([e for e in have if e.status is ExperimentStatus.FINISHED])
        missing = self.config.promotion.noise_runs - len(have) - promoted_here
        broken = [e for e in exps if e.role == "baseline" and e.base_code == code
                  and e.status is ExperimentStatus.FAILED]
        if missing > 0 and len(broken) >= self.config.promotion.noise_runs:
            raise LabError(
                f"main itself fails to run: {len(broken)} baseline runs failed, the last with: "
                f"{broken[-1].reason}. Fix the lab (try `python -m autolab_core.runner` settings by "
                f"running `{' '.join(self.config.run.argv())}` in {self.lab.root}), then run again"
            )
        used = {e.seed for e in have}
        seed = 0
        for _ in range(max(0, missing)):
            while seed in used:
                seed += 1
            used.add(seed)
            h = Hypothesis(id=f"baseline-{seed}", title=f"baseline: main, seed {seed}",
                           source="baseline")
            exp = self._new(h, "baseline", seed=seed)
            commit = self.lab.create_branch(
                f"{BRANCH_PREFIX}{exp.id}", exp.base_commit, {},
                f"autolab: baseline run {exp.id} of main at {exp.base_commit[:12]}, seed {seed}",
            )
            exp = attrs.evolve(exp, branch=f"{BRANCH_PREFIX}{exp.id}", commit=commit,
                               code_hash=exp.base_code, tree_hash=self.lab.tree_of(commit))
            self._put(exp)

    # -- the job -----------------------------------------------------------------------------
    def worktree(self, exp: Experiment) -> Path:
        return self.lab.state_dir / "worktrees" / exp.id

    def job_spec(self, exp: Experiment) -> JobSpec:
        assert exp.commit is not None
        workdir = self.lab.add_worktree(self.worktree(exp), exp.commit)
        cfg = self.config
        run_spec = {
            "experiment_id": exp.id,
            "train": list(cfg.run.argv()),
            "eval": list(cfg.run.eval_argv() or []) or None,
            "protected": list(cfg.files.protected),
            "eval_hash": self.lab.files_hash(exp.base_commit, cfg.files.protected),
            "metric": cfg.metric.name,
            "pattern": cfg.metric.pattern,
            "results_file": cfg.metric.results_file,
            "seed_env": cfg.run.seed_env,
            "seed": exp.seed,
        }
        assert exp.nonce is not None
        return JobSpec(
            experiment_id=exp.id,
            command=(sys.executable, "-m", "autolab_core.runner"),
            workdir=str(workdir),
            env={
                **cfg.run.env,
                "AUTOLAB_RUN_SPEC": json.dumps(run_spec),
                "AUTOLAB_RESULT_NONCE": exp.nonce,
                "AUTOLAB_EXPERIMENT_ID": exp.id,
            },
            time_limit_s=cfg.run.time_limit,
            commit=exp.commit,
            branch=exp.branch,
            labels={"autolab-lab": cfg.name, "autolab-experiment": exp.id},
        )

    def submit(self, exp: Experiment) -> Experiment:
        exp = attrs.evolve(exp, nonce=exp.nonce or secrets.token_hex(16), attempts=exp.attempts + 1)
        spec = self.job_spec(exp)
        budget = self.config.budget.usd
        if budget is not None:
            estimate = self.backend.estimate_cost(spec) or 0.0
            left = budget - self.spent_usd()
            if estimate > left:
                return self.reject(exp, f"over budget: this job may cost ${estimate:.2f}, "
                                        f"${left:.2f} of ${budget:.2f} is left ([budget] usd)")
        exp = self._put(exp.with_status(ExperimentStatus.SUBMITTED))  # before: a crash is safe
        start = getattr(self.store, "start", None)
        if callable(start):  # stores with runs (Trackio) take the experiment's config
            start(exp.id, config={
                "title": exp.hypothesis.title, "role": exp.role, "seed": exp.seed,
                "source": exp.hypothesis.source, "citation": exp.hypothesis.citation,
                **{f"knob.{k}": v for k, v in exp.hypothesis.changes.items()},
            }, group=self.config.name)
        handle = self.backend.submit(spec)
        exp = self._put(attrs.evolve(exp, handle=handle, slot=self.backend.slot_of(handle)))
        if exp.role == "candidate":
            self.started_candidates += 1
        self.say(f"[cyan]submitted[/] {exp.id} ({exp.role}, seed {exp.seed}) "
                 f"{exp.hypothesis.title}")
        return exp

    def spent_usd(self) -> float:
        return sum(e.cost_usd for e in self.experiments())

    # -- following jobs ----------------------------------------------------------------------
    def running(self) -> list[Experiment]:
        return [e for e in self.experiments()
                if e.status in (ExperimentStatus.SUBMITTED, ExperimentStatus.STARTED)]

    def reattach(self) -> None:
        """After a restart: take over jobs a previous session submitted."""
        for exp in self.running():
            handle = exp.handle
            if handle is not None:
                again = self.backend.reattach(handle.job_id)
            else:
                again = self.backend.find(exp.id)
            if again is not None:
                self._put(attrs.evolve(exp, handle=again))
                self.say(f"reattached {exp.id} (job {again.job_id})")
            elif handle is None:
                # Recorded as submitting, but the backend never got it: submit it again.
                self._put(attrs.evolve(exp, history=exp.history[:-1]))
            else:
                self._finish(exp, JobState(JobStatus.UNKNOWN, reason="the backend lost the job"))

    def poll(self) -> None:
        running = [e for e in self.running() if e.handle is not None]
        if not running:
            return
        states = self.backend.poll([e.handle for e in running if e.handle is not None])
        for exp in running:
            assert exp.handle is not None
            state = states.get(exp.handle.job_id)
            if state is None:
                continue
            if state.status is not JobStatus.PENDING and exp.status is ExperimentStatus.SUBMITTED:
                slot = state.hardware.get("slot") or exp.slot  # known once a queued job starts
                exp = self._put(attrs.evolve(exp, slot=slot).with_status(
                    ExperimentStatus.STARTED, at=state.started_at))
            exp = self._read_logs(exp, final=state.status.terminal)
            if state.status.terminal:
                self._finish(exp, state)
        if self.reporter is not None:
            self._review()

    def _review(self) -> None:
        """The Reporter's look at running jobs: flag anomalies, prune hopeless candidates."""
        assert self.reporter is not None
        found = self.reporter.tick(self.experiments())
        for exp_id, new in found.flags.items():
            exp = self.exps[exp_id]
            seen = {f.split(":")[0] for f in exp.flags}
            flags = [f for f in new if f.split(":")[0] not in seen]  # one report per kind
            if not flags:
                continue
            self._put(attrs.evolve(exp, flags=(*exp.flags, *flags)))
            for flag in flags:
                self.say(f"[yellow]anomaly[/] {exp_id}: {flag}")
                self._notify("autolab_anomaly", experiment=exp, flag=flag.split(":")[0],
                             reason=flag)
        for exp_id, reason in found.prunes.items():
            exp = self.exps[exp_id]
            if exp.handle is not None and not exp.done:
                self.backend.cancel(exp.handle)
                self._put(attrs.evolve(exp, reason=reason))
                self.say(f"[yellow]{reason}[/] ({exp_id})")

    def _read_logs(self, exp: Experiment, final: bool) -> Experiment:
        assert exp.handle is not None
        points: list[MetricPoint] = []
        updates: dict[str, Any] = {}
        empty_reads = 0
        while True:
            chunk = self.backend.logs(exp.handle, exp.log_cursor)
            for line in chunk.text.splitlines():
                parsed = parse_metric_line(line)
                if parsed is not None:
                    step, values = parsed
                    points += [MetricPoint(exp.id, step, k, v) for k, v in values.items()]
                elif line.startswith("AUTOLAB_HARDWARE "):
                    updates["hardware"] = _json_tail(line) or {}
                elif line.startswith("AUTOLAB_ERROR "):
                    updates["reason"] = (_json_tail(line) or {}).get("reason", line)
                elif line.startswith(RESULT_PREFIX):
                    payload = _json_tail(line)
                    if payload and payload.get("nonce") == exp.nonce:
                        updates["result"] = _result_from(payload)
            exp = attrs.evolve(exp, log_cursor=chunk.cursor, **updates)
            if chunk.text:
                continue
            # A finished job's last lines can reach a remote log a moment late.
            empty_reads += 1
            if not final or exp.result is not None or empty_reads >= 4:
                break
            time.sleep(0.25)
        if points:
            self.store.append(points)
        return self._put(exp)

    def _finish(self, exp: Experiment, state: JobState) -> None:
        self._changed = True
        self.store.finish(exp.id)
        hardware = {**state.hardware, **exp.hardware}
        if state.hardware.get("slot"):
            exp = attrs.evolve(exp, slot=state.hardware["slot"])
        cost = state.cost_usd or 0.0
        if state.status is JobStatus.SUCCEEDED and exp.result is not None:
            exp = attrs.evolve(exp, hardware=hardware, cost_usd=cost,
                               eval_hash=exp.result.eval_hash)
            exp = exp.with_status(ExperimentStatus.FINISHED, at=state.finished_at)
        else:
            pruned = exp.reason is not None and exp.reason.startswith("pruned")
            status = (ExperimentStatus.PRUNED if pruned else
                      _JOB_TO_EXP.get(state.status, ExperimentStatus.FAILED))
            reason = exp.reason or state.reason or state.status.value
            if state.status is JobStatus.SUCCEEDED:
                reason = exp.reason or "the job succeeded but printed no result line"
            if status is ExperimentStatus.FAILED and state.status is not JobStatus.FAILED:
                reason = f"{state.status.value}: {reason}"
            exp = attrs.evolve(exp, hardware=hardware, cost_usd=cost, reason=reason,
                               verdict=status.value)
            exp = exp.with_status(status, reason, at=state.finished_at)
        if self.reporter is not None:
            seen = {f.split(":")[0] for f in exp.flags}
            flags = tuple(f for f in self.reporter.flags_on_finish(exp, state, self.experiments())
                          if f.split(":")[0] not in seen)
            exp = attrs.evolve(exp, flags=(*exp.flags, *flags))
            for flag in flags:
                self._notify("autolab_anomaly", experiment=exp, flag=flag.split(":")[0],
                             reason=flag)
        self._put(exp)
        if exp.status is ExperimentStatus.FINISHED:
            assert exp.result is not None
            self.say(f"[green]finished[/] {exp.id} {self.config.metric.name}="
                     f"{exp.result.value:.4f} ({exp.role}) {exp.hypothesis.title}")
        else:
            self.say(f"[red]{exp.status.value}[/] {exp.id} {exp.hypothesis.title}: {exp.reason}")
        self._record([exp], f"autolab: record {exp.id} ({exp.status.value}): "
                            f"{exp.hypothesis.title}")
        self._notify("autolab_experiment_finished", experiment=exp)

    # -- judging -----------------------------------------------------------------------------
    def judge(self) -> None:
        """Give every finished candidate whose comparison is ready its verdict."""
        exps = self.experiments()
        sigma = gate.pooled_sigma(exps, self.config.promotion.min_sigma)
        rules, direction, metric = self.config.promotion, self.config.metric.dir, self.config.metric.name
        for cand in exps:
            if cand.role != "candidate" or cand.verdict not in (None, "confirming"):
                continue
            if cand.status is not ExperimentStatus.FINISHED:
                continue
            base = gate.values(gate.main_runs(exps, cand.base_code or ""))
            if len(base) < rules.noise_runs or sigma is None:
                continue  # calibration still running
            runs = gate.runs_of(exps, cand.id)
            if cand.verdict is None:
                v = gate.judge(gate.values(runs), base, sigma, direction, rules, screen=True)
                if not v.passed:
                    self._verdict(cand, "not better", v, f"not better: {v.describe(metric)}")
                    continue
                confirms = [self._put(self._confirm(cand, seed))
                            for seed in range(1, rules.confirm_runs + 1)]
                self._verdict(cand, "confirming", v,
                              f"passed the screen ({v.describe(metric)}); confirming with "
                              f"{len(confirms)} more seeds", record=False)
                continue
            confirms = [e for e in exps if e.role == "confirm" and e.parent == cand.id]
            if not all(e.done for e in confirms):
                continue
            failed = [e.id for e in confirms if e.status is not ExperimentStatus.FINISHED]
            if failed:
                self._verdict(cand, "failed confirmation", None,
                              f"confirmation runs {', '.join(failed)} did not finish")
                continue
            v = gate.judge(gate.values(runs), base, sigma, direction, rules, screen=False)
            if not v.passed:
                self._verdict(cand, "not confirmed", v, f"not confirmed: {v.describe(metric)}")
                continue
            self.promote(cand, runs, v, exps)

    def _confirm(self, cand: Experiment, seed: int) -> Experiment:
        exp = self._new(cand.hypothesis, "confirm", seed=seed, parent=cand)
        return attrs.evolve(exp, base_commit=cand.base_commit, base_code=cand.base_code,
                            branch=cand.branch, commit=cand.commit, code_hash=cand.code_hash,
                            tree_hash=cand.tree_hash, patch=cand.patch)

    def _verdict(self, cand: Experiment, verdict: str, v: gate.Verdict | None, note: str,
                 record: bool = True) -> Experiment:
        cand = self._put(attrs.evolve(
            cand, verdict=verdict, reason=note,
            effect=None if v is None else v.effect, effect_err=None if v is None else v.err,
            n_runs=cand.n_runs if v is None else v.n,
        ))
        self.say(f"{cand.id} {cand.hypothesis.title}: {note}")
        if record:
            self._record([cand], f"autolab: verdict on {cand.id}: {verdict}\n\n{note}")
        return cand

    def approve(self, exp_id: str, who: str) -> Experiment:
        """A person clears a flagged candidate; it is promoted if it still wins on main's code."""
        exps = self.experiments()
        cand = self.exps.get(exp_id)
        if cand is None or cand.role != "candidate" or cand.verdict != "needs review":
            raise LabError(f"{exp_id} is not a candidate waiting for review "
                           f"(its verdict: {cand.verdict if cand else 'no such experiment'})")
        runs = gate.runs_of(exps, cand.id)
        base = gate.values(gate.main_runs(exps, cand.base_code or ""))
        sigma = gate.pooled_sigma(exps, self.config.promotion.min_sigma)
        assert sigma is not None
        v = gate.judge(gate.values(runs), base, sigma, self.config.metric.dir,
                       self.config.promotion, screen=False)
        cand = self._put(attrs.evolve(cand, flags=(*cand.flags, f"approved: by {who}")))
        self.promote(cand, runs, v, exps, approved=True)
        self.flush_records()
        return self.exps[exp_id]

    def promote(self, cand: Experiment, runs: Sequence[Experiment], v: gate.Verdict,
                exps: Sequence[Experiment], approved: bool = False) -> None:
        metric = self.config.metric.name
        flags = [f for e in runs for f in e.flags]
        if needs_human(flags) and not approved:
            self._verdict(cand, "needs review", v,
                          f"would be promoted ({v.describe(metric)}) but is flagged: "
                          f"{'; '.join(dict.fromkeys(flags))}. A human must approve it: "
                          f"`autolab approve {cand.id}`")
            return
        cost = _cost_ratio(runs, gate.main_runs(exps, cand.base_code or ""),
                           self.config.promotion.min_cost_seconds)
        limit = self.config.promotion.max_cost_increase
        if cost is not None and cost > 1 + limit:
            self._verdict(cand, "needs equal-compute comparison", v,
                          f"wins ({v.describe(metric)}) but costs {100 * (cost - 1):.0f}% more "
                          f"CPU per run than main (limit {100 * limit:.0f}%); compare it at "
                          "equal compute before promoting")
            return
        main_code = self.main_code()
        if cand.base_code != main_code:
            self._revalidate(cand, v)
            return
        assert cand.commit is not None
        new_files = self.lab.files_at(cand.commit, self.config.files.editable)
        before = gate.values(gate.main_runs(exps, cand.base_code or ""))
        message = _promotion_message(cand, runs, v, metric, sum(before) / len(before))
        cand = attrs.evolve(cand, verdict="promoted", reason=v.describe(metric),
                            effect=v.effect, effect_err=v.err, n_runs=v.n)
        try:
            commit = self.lab.record_on_main(
                [cand, *[e for e in runs if e.id != cand.id]], message,
                extra_files=new_files, expect_code=(self.code_paths, main_code),
            )
        except LabError:
            self._revalidate(cand, v)
            return
        self._put(cand)
        self.say(f"[bold green]promoted[/] {cand.id} {cand.hypothesis.title}: "
                 f"{v.describe(metric)} -> main {commit[:12]}")
        self._notify("autolab_change_promoted", experiment=cand, commit=commit,
                     improvement=v.effect)

    def _revalidate(self, cand: Experiment, v: gate.Verdict) -> None:
        again = self._new(cand.hypothesis, "candidate", parent=cand)
        self._verdict(cand, "revalidating", v,
                      f"won on an older main; re-running on the current main as {again.id}")
        self._put(again)

    # -- recording ---------------------------------------------------------------------------
    def _record(self, exps: Sequence[Experiment], message: str) -> None:
        """Queue records for ``main``; :meth:`flush_records` commits them in one go.

        The live records are already in the state directory, so a crash before the flush
        loses nothing: :meth:`sync_records` commits whatever main is missing at the next start.
        """
        with self._lock:
            for exp in exps:
                self._unrecorded[exp.id] = message

    def flush_records(self) -> None:
        with self._lock:
            pending, self._unrecorded = self._unrecorded, {}
        if not pending:
            return
        exps = [self.exps[i] for i in sorted(pending)]
        messages = list(dict.fromkeys(pending[i] for i in sorted(pending)))
        title = messages[0] if len(messages) == 1 else (
            f"autolab: record {len(exps)} experiments ({', '.join(e.id for e in exps)})")
        body = "" if len(messages) == 1 else "\n".join(m.splitlines()[0] for m in messages)
        extra: dict[str, str | None] = {}
        conv_dir = self.lab.state_dir / "conversations"
        for exp in exps:
            cid = exp.hypothesis.conversation_id
            if cid and (conv_dir / f"{cid}.json").exists():
                extra[f"{RECORDS}/conversations/{cid}.json"] = (conv_dir / f"{cid}.json").read_text()
        try:
            self.lab.record_on_main(exps, f"{title}\n\n{body}".strip(), extra_files=extra)
        except AutolabError as exc:
            self.say(f"[red]could not record {', '.join(e.id for e in exps)} on main: {exc}[/]")
            with self._lock:
                for exp_id, message in pending.items():
                    self._unrecorded.setdefault(exp_id, message)

    def sync_records(self) -> None:
        """Record on main every finished experiment whose record there is missing or old."""
        on_main = {r["id"]: r for r in self.lab.scores()}
        for exp in self.experiments():
            row = on_main.get(exp.id)
            if exp.done and (row is None or row.get("status") != exp.status.value
                             or (row.get("verdict") or None) != exp.verdict):
                self._record([exp], f"autolab: record {exp.id} ({exp.status.value})")
        self.flush_records()

    def _notify(self, hook: str, **kwargs: Any) -> None:
        if self.plugins is not None:
            self.plugins.notify(hook, lab=self.lab, **kwargs)

    # -- the loop ----------------------------------------------------------------------------
    def ready(self) -> list[Experiment]:
        """Queued experiments with a commit, in submission order: confirm, baseline, rest."""
        rank = {"confirm": 0, "baseline": 1, "candidate": 2}
        queued = [e for e in self.experiments()
                  if e.status is ExperimentStatus.QUEUED and (e.commit or e.role == "confirm")]
        return sorted(queued, key=lambda e: (rank.get(e.role, 3), e.id))

    def out_of_budget(self) -> str | None:
        o, b = self.options, self.config.budget
        elapsed = time.time() - self.started_at
        if o.time_s is not None and elapsed >= o.time_s:
            return f"time limit ({o.time_s:.0f} s) reached"
        if b.max_hours is not None and elapsed >= b.max_hours * 3600:
            return f"[budget] max_hours ({b.max_hours}) reached"
        if b.usd is not None and self.spent_usd() >= b.usd:
            return f"[budget] usd ({b.usd}) spent"
        return None

    def candidates_left(self) -> bool:
        limit = self.options.max_experiments or self.config.budget.max_experiments
        return limit is None or self.started_candidates < limit

    def _fill_slots(self) -> None:
        extra = self.options.prefetch if self.backend.capacity is not None else 0
        free = self.capacity + extra - len(self.running())
        for exp in self.ready():
            if free <= 0:
                break
            if exp.role == "candidate":
                if not self.candidates_left():
                    continue
                if exp.base_code != self.main_code():
                    self._rebase(exp)  # the proposal thread re-writes it on the new main
                    continue
            exp = self.submit(exp)
            if exp.status is not ExperimentStatus.REJECTED:
                free -= 1

    def _rebase(self, exp: Experiment) -> None:
        """Move a queued candidate onto the current main; the pipeline re-writes its patch."""
        main = self.lab.main_commit()
        moved = attrs.evolve(exp, base_commit=main, commit=None, code_hash=None, patch="",
                             base_code=self.main_code())
        why = check_hypothesis(exp.hypothesis, [e for e in self.experiments() if e.id != exp.id],
                               moved.base_code or "")
        if why:
            self.reject(moved, why)
        else:
            self._put(moved)

    def idle(self) -> bool:
        """Nothing running, nothing that may still run."""
        if self.running():
            return False
        pending_confirm = any(e.role == "candidate" and e.verdict == "confirming"
                              for e in self.experiments())
        ready = [e for e in self.ready() if e.role != "candidate" or self.candidates_left()]
        if ready or pending_confirm:
            return False
        unjudged = any(e.role == "candidate" and e.status is ExperimentStatus.FINISHED
                       and e.verdict is None for e in self.experiments())
        if unjudged:
            return False
        return not self.candidates_left() or self.exhausted

    def stop(self) -> None:
        self._stop.set()

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            self.say(f"[yellow]stopping: no new jobs; running jobs: {self.options.on_stop} "
                     "(Ctrl-C again to cancel them)[/]")
            self._stop.set()
        else:
            self.options.on_stop = "cancel"

    def run(self) -> list[Experiment]:
        """Run until a budget is spent, the ideas run out, or the user stops it."""
        in_main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, self._on_sigint) if in_main else None
        with self.lab.exclusive("orchestrator", "another `autolab run`"):
            try:
                self._run()
            finally:
                if self._pipeline is not None:
                    self._pipeline.stop()
                if old is not None:
                    signal.signal(signal.SIGINT, old)
                self.store.close()  # flushes; the store's single-writer lock is released
                self.backend.close()  # running jobs (on_stop="detach") keep running
        return self.experiments()

    def _run(self) -> None:
        self.sync_records()
        self.reattach()
        self.add_baselines()
        self._pipeline = ProposalPipeline(self)
        self._pipeline.start()
        stop_reason: str | None = None
        while True:
            self.poll()
            self.judge()
            stop_reason = stop_reason or self.out_of_budget() or (
                "stopped by the user" if self._stop.is_set() else None)
            if stop_reason:
                break
            if self._changed:
                self.add_baselines()
                self._changed = False
            self._fill_slots()
            self.flush_records()
            self._progress()
            if self.idle():
                stop_reason = ("no more ideas" if self.exhausted and self.candidates_left()
                               else "experiment budget reached")
                break
            time.sleep(self.options.poll_interval)
        self.say(f"[bold]stopping:[/] {stop_reason}")
        self._pipeline.stop()
        self._drain()

    def _progress(self, every: float = 30.0) -> None:
        """A one-line summary of the session every ``every`` seconds."""
        now = time.time()
        if now - self._last_progress < every:
            return
        self._last_progress = now
        exps = self.experiments()
        code = self.main_code()
        main_values = gate.values(gate.main_runs(exps, code))
        best = f"{sum(main_values) / len(main_values):.4f}" if main_values else "calibrating"
        promoted = sum(1 for e in exps if e.verdict == "promoted")
        queued = sum(1 for e in exps if e.status is ExperimentStatus.QUEUED)
        self.say(
            f"[dim]{time.strftime('%H:%M:%S')} {len(self.running())} running, {queued} queued, "
            f"{self.started_candidates} candidates started, {promoted} promoted; main "
            f"{self.config.metric.name} {best}[/]"
        )

    def _drain(self) -> None:
        while self.running():
            if self.options.on_stop == "detach":
                self.say("leaving running jobs; `autolab run` again reattaches them")
                return
            if self.options.on_stop == "cancel":
                for exp in self.running():
                    if exp.handle is not None:
                        self.backend.cancel(exp.handle)
            self.poll()
            self.judge()
            self.flush_records()
            time.sleep(self.options.poll_interval)
        self.judge()
        self.flush_records()


class ProposalPipeline:
    """Researcher -> Planner -> Worker, in a background thread, feeding the ready queue."""

    MAX_ERRORS = 3  # Researcher failures in a row before falling back to the knob explorer

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="autolab-proposer", daemon=True)
        self.inbox = orch.lab.state_dir / "inbox.jsonl"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception as exc:  # the pipeline must not die silently
                self.orch.say(f"[red]proposer error: {type(exc).__name__}: {exc}[/]")
                worked = False
            self._stop.wait(0.05 if worked else 0.5)

    def _queued_candidates(self) -> int:
        return sum(1 for e in self.orch.experiments()
                   if e.role == "candidate" and e.status is ExperimentStatus.QUEUED)

    def step(self) -> bool:
        orch = self.orch
        if self._take_inbox():
            return True
        for exp in orch.experiments():
            if exp.role == "candidate" and exp.status is ExperimentStatus.QUEUED and not exp.commit:
                orch.materialize(exp)
                return True
        for exp in orch.experiments():  # failed runs keep their checkout for a post-mortem
            if exp.done and exp.status is not ExperimentStatus.FAILED and orch.worktree(exp).exists():
                orch.lab.remove_worktree(orch.worktree(exp))
                return True
        for exp in orch.ready()[: orch.capacity * 2]:
            worktree = orch.worktree(exp)
            if exp.commit and exp.base_code == orch.main_code() and not worktree.exists():
                orch.lab.add_worktree(worktree, exp.commit)  # ahead of time: submits stay fast
                return True
        if not orch.candidates_left() or self._queued_candidates() >= orch.depth:
            return False
        digest = orch.digest()
        want = orch.depth - self._queued_candidates()
        try:
            hypotheses = orch.proposer.propose(digest, want)
            self.errors = 0
        except LLMError as exc:
            self.errors += 1
            orch.say(f"[red]the Researcher failed ({self.errors} in a row): {exc}[/]")
            if self.errors >= self.MAX_ERRORS and orch.fallback is not None:
                orch.say("[yellow]switching to the knob explorer[/]")
                orch.proposer, orch.writer = orch.fallback
                orch.fallback = None
            elif self.errors >= self.MAX_ERRORS:
                orch.exhausted = True
            self._stop.wait(min(60.0, 2.0 ** self.errors))
            return False
        except BudgetExceeded as exc:
            if orch.fallback is None:
                orch.say(f"[yellow]{exc}; no more ideas[/]")
                orch.exhausted = True
                return False
            orch.say(f"[yellow]{exc}; switching to the knob explorer[/]")
            orch.proposer, orch.writer = orch.fallback
            orch.fallback = None
            return True
        if not hypotheses:
            orch.exhausted = True
            return False
        orch.exhausted = False
        for h in hypotheses:
            self.plan(h, digest.code_hash)
        return True

    def plan(self, h: Hypothesis, code: str) -> Experiment | None:
        orch = self.orch
        exp = orch._new(h, "candidate")
        why = check_hypothesis(h, orch.experiments(), code)
        if why:
            orch.reject(exp, why)
            return None
        return orch.materialize(exp)

    def _take_inbox(self) -> bool:
        """Ideas a user queued with ``autolab try``."""
        if not self.inbox.exists():
            return False
        taken = self.inbox.with_suffix(".taking")
        self.inbox.replace(taken)
        for line in taken.read_text().splitlines():
            if line.strip():
                self.plan(Hypothesis.from_dict(json.loads(line)), self.orch.main_code())
        taken.unlink()
        return True


def _json_tail(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line.split(" ", 1)[1])
    except (IndexError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _result_from(payload: Mapping[str, Any]) -> Result:
    extra = dict(payload.get("extra") or {})
    if payload.get("train_cpu_seconds") is not None:
        extra["train_cpu_seconds"] = float(payload["train_cpu_seconds"])
    return Result(
        metric=str(payload["metric"]), value=float(payload["value"]),
        seed=int(payload.get("seed", 0)), train_seconds=payload.get("train_seconds"),
        eval_hash=payload.get("eval_hash"), trusted=bool(payload.get("trusted", True)),
        extra=extra,
    )


def _cost_ratio(runs: Iterable[Experiment], base: Iterable[Experiment],
                min_seconds: float = 0.0) -> float | None:
    """Mean training CPU seconds of ``runs`` over ``base``'s; None when unknown or when the
    difference is under ``min_seconds`` per run (timing noise on short runs)."""
    def cpu(exps: Iterable[Experiment]) -> list[float]:
        return [e.result.extra["train_cpu_seconds"] for e in exps
                if e.result is not None and "train_cpu_seconds" in e.result.extra]
    a, b = cpu(runs), cpu(base)
    if not a or not b or sum(b) <= 0:
        return None
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    if mean_a - mean_b < min_seconds:
        return None
    return mean_a / mean_b


def _branch_message(exp: Experiment) -> str:
    h = exp.hypothesis
    lines = [f"autolab: experiment {exp.id}: {h.title}", ""]
    if h.rationale:
        lines.append(f"Rationale: {h.rationale}")
    lines.append(f"Source: {h.source}")
    if h.citation:
        lines.append(f"Citation: {h.citation}")
    if h.conversation_id:
        lines.append(f"Conversation: {RECORDS}/conversations/{h.conversation_id}.json")
    lines.append(f"Base: {exp.base_commit}")
    return "\n".join(lines)


def _promotion_message(cand: Experiment, runs: Sequence[Experiment], v: gate.Verdict,
                       metric: str, before: float) -> str:
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

"""The run loop: slots, stopping, progress.

- The *Researcher* and the patch-writing half of the *Worker* run in a background thread
  (:class:`~autolab.run.proposals.ProposalPipeline`), so slow LLM calls never leave a slot
  idle: it keeps a queue of ready experiments deeper than the number of slots.
- The loop submits ready experiments whenever a slot is free (:class:`~autolab.run.jobs.Jobs`),
  follows each job's log stream as the *Reporter*, and judges finished runs with the noise gate
  (:class:`~autolab.run.promotion.Promotion`), promoting confirmed wins to ``main``.

Every state change is written to the lab's state directory before it is acted on, and every
verdict is committed to ``main``'s records, so a crashed or interrupted run resumes where it
stopped: running jobs are reattached, queued experiments are submitted, nothing runs twice.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import attrs
from rich.markup import escape

from autolab.agents.knobs import compute_kind
from autolab.run import gate
from autolab.run.jobs import Jobs
from autolab.run.ledger import Ledger
from autolab.run.promotion import Promotion, calibrated_main_values, schedule_baselines
from autolab.run.proposals import ProposalPipeline, Roles, rebase
from autolab.run.smoke import SmokeCheck, smoke_check
from autolab.run.upkeep import Upkeep
from autolab.seed_check import seed_warning
from autolab_core.errors import LabError
from autolab_core.guard import MainGuard, Pins, TamperAlert
from autolab_core.models import Experiment, ExperimentStatus
from autolab_core.vocab import Role, Verdict


@attrs.define
class RunOptions:
    """How long and how wide a session runs (already resolved: see :mod:`autolab.run.settings`)."""

    workers: int | None = None  # None: the backend's own capacity, else 1
    max_experiments: int | None = None  # candidate experiments started in this session
    time_s: float | None = None
    on_stop: str = "finish"  # "finish": let running jobs end; "cancel"; "detach": leave them
    poll_interval: float = 0.5
    queue_depth: int | None = None
    # Jobs handed to a backend that queues them itself and knows its slots (`local`) beyond
    # its free slots, so a freed slot starts the next job without waiting for a poll.
    prefetch: int = 1


def isolation_header(requested: str, runs_here: bool) -> str:
    """The run header's sandbox line: the level jobs get on this machine, or (for a cluster or
    cloud backend) that the job's machine decides; every result records the level that ran."""
    from autolab_core import sandbox

    if not runs_here:
        return (f"isolation: {requested} (the strongest sandbox on each job's machine; every "
                "result records its level)")
    level = sandbox.detect(requested)
    weak = "" if level != "none" else (
        ": no sandbox on this machine, jobs run as you (install bubblewrap, see docs/trust.md); "
        "tampering is still detected")
    return f"isolation: {level}{weak}"


class RunLoop:
    """Runs the lab. Build it with :func:`autolab.run.assemble.build_loop`."""

    def __init__(self, ledger: Ledger, jobs: Jobs, roles: Roles, options: RunOptions,
                 smoke: SmokeCheck | None = None) -> None:
        self.ledger = ledger
        self.jobs = jobs
        self.promotion = Promotion(ledger, compute_kind=compute_kind)
        self.roles = roles
        self.options = options
        self.lab = ledger.lab
        self.config = ledger.config
        self.backend = jobs.backend
        self.store = jobs.store
        self.smoke = smoke or smoke_check(self.lab, self.backend.runs_on_this_machine)
        self.capacity = self.backend.capacity or options.workers or 1
        self.depth = options.queue_depth or self.config.search.queue_depth or self.capacity + 2
        self.started_candidates = 0
        self.started_at = time.time()
        self._stop = threading.Event()
        self._interrupts = 0
        self._pipeline: ProposalPipeline | None = None
        self._changed = True  # something finished: main may need new baseline runs
        self._last_progress = time.time()
        self._seeds_checked: set[str] = set()  # main code hashes whose baselines were checked
        # backend cleanup, old checkouts, disk use: at the start, then about hourly
        self.upkeep = Upkeep(jobs, self.config.run.keep_checkouts)

    # -- what the live table and the tests read ----------------------------------------------
    def experiments(self) -> list[Experiment]:
        return self.ledger.experiments()

    def running(self) -> list[Experiment]:
        return self.ledger.running()

    def pipeline(self) -> ProposalPipeline:
        """A (not yet started) proposal pipeline wired to this run."""
        return ProposalPipeline(
            self.ledger, self.roles, depth=self.depth, candidates_left=self.candidates_left,
            smoke=self.smoke, housekeeping=lambda: self.jobs.housekeeping(self.capacity * 2),
        )

    # -- limits ------------------------------------------------------------------------------
    def out_of_budget(self) -> str | None:
        o, b = self.options, self.config.budget
        elapsed = time.time() - self.started_at
        if o.time_s is not None and elapsed >= o.time_s:
            return f"time limit ({o.time_s:.0f} s) reached"
        if b.max_hours is not None and elapsed >= b.max_hours * 3600:
            return f"[budget] max_hours ({b.max_hours}) reached"
        spent = max(self.jobs.budget.totals()["spent"], self.ledger.spent_usd())  # older labs
        if b.usd is not None and spent >= b.usd:
            return f"[budget] usd ({b.usd}) spent"
        if self.jobs.budget_refusal:
            return self.jobs.budget_refusal
        return None

    def candidates_left(self) -> bool:
        limit = self.options.max_experiments or self.config.budget.max_experiments
        return limit is None or self.started_candidates < limit

    @property
    def exhausted(self) -> bool:
        return self._pipeline is not None and self._pipeline.exhausted

    def idle(self) -> bool:
        """Nothing running, nothing that may still run."""
        if self.running():
            return False
        ready = [e for e in self.ledger.ready()
                 if e.role != Role.CANDIDATE or self.candidates_left()]
        if ready or self.promotion.pending():
            return False
        return not self.candidates_left() or self.exhausted

    # -- slots -------------------------------------------------------------------------------
    def fill_slots(self) -> None:
        """Submit ready experiments while slots are free."""
        queues_ahead = self.backend.queues and self.backend.capacity is not None
        free = self.capacity + (self.options.prefetch if queues_ahead else 0) - len(self.running())
        wave: list[Experiment] = []
        candidates = self.started_candidates
        for exp in self.ledger.ready():
            if len(wave) >= free:
                break
            if exp.role == Role.CANDIDATE:
                limit = self.options.max_experiments or self.config.budget.max_experiments
                if limit is not None and candidates >= limit:
                    continue
                if exp.base_code != self.ledger.main_code():
                    rebase(self.ledger, exp)  # the proposal thread re-writes it on the new main
                    continue
                candidates += 1
            wave.append(exp)
        if not wave:
            return
        # one call for the whole turn: a backend that batches (SLURM arrays) does it here
        for exp in self.jobs.submit_many(wave):
            if exp.status is ExperimentStatus.SUBMITTED:
                self.started_candidates += exp.role == Role.CANDIDATE

    # -- stopping ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            self.ledger.say(f"[yellow]stopping: no new jobs; running jobs: {self.options.on_stop} "
                            "(Ctrl-C again to cancel them)[/]")
            self._stop.set()
        else:
            self.options.on_stop = "cancel"

    # -- the loop ----------------------------------------------------------------------------
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
                self.ledger.flush_records()  # also when main fails to run: its records stay
                if old is not None:
                    signal.signal(signal.SIGINT, old)
                self.store.close()  # flushes; the store's single-writer lock is released
                self.backend.close()  # running jobs (on_stop="detach") keep running
        return self.experiments()

    def _tick(self) -> None:
        self.check_refs()
        if self.jobs.poll():
            self._changed = True
            self.check_pins()  # before scoring what ended
        self.promotion.judge()

    def check_refs(self) -> None:
        """Stop the run (:class:`TamperAlert`, naming the commit) when ``main`` or an experiment
        branch moved without autolab; the ref is put back where autolab last wrote it."""
        guard = self.lab.guard
        if guard is None:
            return
        try:
            guard.check(restore=False)
        except TamperAlert:
            # A ref this process is writing right now is journalled a moment after it moves.
            time.sleep(0.5)
            try:
                guard.check()
            except TamperAlert as alert:
                self._alert(alert)

    def check_pins(self) -> None:
        """Stop the run when the protected files or data differ from their pins."""
        try:
            Pins(self.lab).verify()
        except LabError as exc:
            self._alert(LabError(f"ALERT: {exc}. The run stops here: nothing more is scored."))

    def _alert(self, alert: LabError) -> None:
        """Say ``alert``, cancel the running jobs (they may be scored on a tampered lab), and
        stop the run with it."""
        self.ledger.say(f"[bold red]{escape(str(alert))}[/]")
        self.jobs.cancel_running()
        raise alert

    def _run(self) -> None:
        self.lab.guard = MainGuard(self.lab)  # main and the branches as this session finds them
        self.ledger.say(escape(isolation_header(self.config.run.isolation,
                                                self.backend.runs_on_this_machine)))
        self.ledger.sync_records()
        self.jobs.reattach()
        self.upkeep.maybe_run()
        schedule_baselines(self.ledger, self.started_at)
        self._pipeline = self.pipeline()
        self._pipeline.start()
        stop_reason: str | None = None
        while True:
            self._tick()
            stop_reason = stop_reason or self.out_of_budget() or (
                "stopped by the user" if self._stop.is_set() else None)
            if stop_reason:
                break
            if self._changed:
                schedule_baselines(self.ledger, self.started_at)
                self.check_seeds()
                self._changed = False
            self.fill_slots()
            self.ledger.flush_records()
            self.progress()
            self.upkeep.maybe_run()
            if self.idle():
                stop_reason = ("no more ideas" if self.exhausted and self.candidates_left()
                               else "experiment budget reached")
                break
            time.sleep(self.options.poll_interval)
        self.ledger.say(f"[bold]stopping:[/] {stop_reason}")
        self._pipeline.stop()
        self._drain()

    def check_seeds(self) -> str | None:
        """Once per main code, when its baselines have all ended: warn (and return the warning)
        if they gave identical values, i.e. the script ignores the seed it is given."""
        found = calibrated_main_values(self.ledger)
        if found is None or found[0] in self._seeds_checked:
            return None
        code, values = found
        self._seeds_checked.add(code)
        cfg = self.config
        text = seed_warning(values, metric=cfg.metric.name, seed_env=cfg.run.seed_env,
                            min_sigma=cfg.promotion.min_sigma)
        if text is not None:
            self.ledger.say(escape(text))
        return text

    def progress(self, every: float = 30.0) -> None:
        """A one-line summary of the session every ``every`` seconds."""
        now = time.time()
        if now - self._last_progress < every:
            return
        self._last_progress = now
        exps = self.experiments()
        main_values = gate.values(gate.main_runs(exps, self.ledger.main_code()))
        best = f"{sum(main_values) / len(main_values):.4f}" if main_values else "calibrating"
        promoted = sum(1 for e in exps if e.verdict == Verdict.PROMOTED)
        queued = sum(1 for e in exps if e.status is ExperimentStatus.QUEUED)
        self.ledger.say(
            f"[dim]{time.strftime('%H:%M:%S')} {len(self.running())} running, {queued} queued, "
            f"{self.started_candidates} candidates started, {promoted} promoted; main "
            f"{self.config.metric.name} {best}[/]"
        )

    def _drain(self) -> None:
        while self.running():
            if self.options.on_stop == "detach":
                self.ledger.say("leaving running jobs; `autolab run` again reattaches them")
                return
            if self.options.on_stop == "cancel":
                self.jobs.cancel_running()
            self._tick()
            self.ledger.flush_records()
            time.sleep(self.options.poll_interval)
        self.promotion.judge()
        self.check_seeds()  # the last baselines may have ended while draining
        self.ledger.flush_records()

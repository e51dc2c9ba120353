"""The ``slurm`` backend: jobs on a SLURM cluster, submitted through submitit.

Each job runs :func:`autolab.backends.slurm_job.run_job` on a compute node, which runs the
command in the experiment's checkout (on the shared filesystem), streams its output to a log
file, enforces the time limit and leaves an exit record. The backend watches jobs itself, with
one ``squeue`` call for all of them at most every ``poll_interval_s`` (submitit's watcher uses
``sacct``, backs off to 600 s and never sees cancelled or timed-out jobs on a cluster without
accounting), plus the exit records; ``sacct`` is asked only about jobs squeue has forgotten.

Jobs are named ``autolab-<lab>-<experiment id>`` so that :meth:`SlurmBackend.find` can tell a
restarted orchestrator that an experiment was already submitted.
"""

from __future__ import annotations

import getpass
import importlib.util
import logging
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autolab.backends import slurm_cleanup, slurm_preflight, slurm_reasons
from autolab.backends import slurm_cli as cli
from autolab.backends.slurm_cli import Row
from autolab.backends.slurm_options import SlurmOptions, parse_sbatch_args
from autolab.backends.slurm_store import LOCAL_PREFIX, RunDir, Store
from autolab_core import hookimpl
from autolab_core.config import parse_options
from autolab_core.errors import BackendError, ConfigError
from autolab_core.interfaces import JobBackend, PluginContext
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus, LogChunk

log = logging.getLogger(__name__)

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
_RETRYABLE = {"PREEMPTED", "NODE_FAIL", "BOOT_FAIL"}
_KILLED = {"CANCELLED", "REVOKED", "TIMEOUT", "DEADLINE", "OUT_OF_MEMORY"} | _RETRYABLE
_ENDED = _KILLED | {"COMPLETED", "FAILED", "SPECIAL_EXIT"}
#: Seconds to wait for a job's exit record after SLURM says it ended (shared filesystems such as
#: NFS show another host's new files a little late).
EXIT_RECORD_GRACE_S = 15.0
#: SLURM's words for a job killed for its memory: OverMemoryKill, and the cgroup OOM handler.
_OOM_MESSAGE = re.compile(r"exceeded (job )?memory limit|oom-kill|out of memory|OUT_OF_MEMORY",
                          re.IGNORECASE)
#: Seconds before trying sbatch again after it failed for a reason other than the options (an
#: unreachable controller makes each try take ~10 s).
PUMP_BACKOFF_S = 30.0


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "lab"


class SlurmBackend(JobBackend):
    """Runs jobs on a SLURM cluster through submitit; see ``docs/slurm.md``."""

    name = "slurm"
    runs_on_this_machine = False
    queues = True
    description = "SLURM cluster through submitit (sbatch, squeue, scancel)"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.opts = parse_options(SlurmOptions, options, "backend.slurm")
        root = (
            Path(self.opts.folder).expanduser().resolve()
            if self.opts.folder
            else context.plugin_dir(self.name)
        )
        self.store = Store(root)
        self.user = getpass.getuser()
        self.lab = _safe_name(context.lab_name)
        self._rows: dict[str, Row] = {}
        self._rows_at = float("-inf")  # monotonic time of the last good squeue
        self._rows_wall = 0.0  # wall-clock time just before that squeue ran
        self._rows_ok = False
        self._acct: dict[str, Row] = {}
        self._accounting: bool | None = None
        self._final: dict[str, JobState] = {}
        self._hardware: dict[str, dict[str, str]] = {}
        self._ended_seen: dict[str, float] = {}
        self._recent: dict[str, float] = {}  # job id -> when this instance submitted it
        self._pump_error: str | None = None
        self._pump_retry_at = float("-inf")
        self._pump_failures = 0
        self._squeue_failures = 0
        self._squeue_retry_at = float("-inf")
        self._sacct_failures = 0
        self._sacct_retry_at = float("-inf")
        self._runs: dict[str, RunDir] = {}  # run directories seen, with their cached files
        self._states: dict[str, JobState] = {}  # last state of each live run, per squeue refresh
        self._usable: dict[str, tuple[float, bool]] = {}  # partition -> (when asked, has a node)

    # -- availability ------------------------------------------------------------------------
    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("submitit") is None:
            return "submitit is not installed: pip install 'autolab-ml[slurm]'"
        if shutil.which("sbatch") is None:
            return (
                "sbatch is not on PATH: run autolab on a SLURM login node "
                "(or start the local test cluster: scripts/local-slurm.sh up)"
            )
        return None

    def check(self) -> str | None:
        """Before the first job: the controller answers, the partition (hidden ones too) exists,
        the effective wall time fits its MaxTime, the account/partition/QOS is an association
        (where there is accounting), sbatch accepts the options, and (``probe = true``) one tiny
        job sees the lab's files and imports the job runner (see ``slurm_preflight``)."""
        reason = self.available()
        if reason:
            return reason
        try:
            problem = slurm_preflight.limits_problem(self.opts, self._wall_minutes(), self.user)
            if problem:
                return problem
            refused = cli.sbatch_test_only(self._flags())
            if refused is not None:
                return self._options_message(refused, None)
            if self.opts.probe:
                return slurm_preflight.storage_probe(
                    self.opts, self.store.root, self.context.state_dir, self._flags(), self.user)
        except BackendError as exc:
            return str(exc)
        return None

    def _wall_minutes(self) -> int | None:
        """The wall time jobs will ask for: time_limit, else the lab's [run] time_limit + 2 min."""
        if self.opts.time_limit is not None:
            return self.opts.minutes(None)
        import tomllib

        from autolab_core.config import RunSection, parse_duration

        try:
            with open(self.context.lab_root / "autolab.toml", "rb") as f:
                run = tomllib.load(f).get("run", {})
        except (OSError, tomllib.TOMLDecodeError):  # a bare backend, no lab: nothing to check
            return None
        limit = run.get("time_limit", RunSection().time_limit)
        return self.opts.minutes(None if limit is None else parse_duration(limit, "[run] time_limit"))

    def cleanup(self) -> list[str]:
        """Remove job folders of runs that ended more than ``retention`` ago; the experiment ids."""
        return slurm_cleanup.remove_finished(self.store, self.opts.retention)

    def disk_usage(self) -> int:
        """Bytes used by this backend's folder (run directories, submitit files)."""
        return slurm_cleanup.disk_usage(self.store.root)

    # -- naming ------------------------------------------------------------------------------
    def job_name(self, experiment_id: str) -> str:
        return f"autolab-{self.lab}-{experiment_id}"

    def _run(self, handle: JobHandle) -> RunDir:
        path = handle.data.get("run_dir") if handle.data else None
        if path and path in self._runs:
            return self._runs[path]
        run = RunDir(path) if path else self.store.lookup(handle.job_id)
        if run is None or not run.exists():
            raise BackendError(
                f"no record of SLURM job {handle.job_id} under {self.store.root}; "
                "was [backend.slurm] folder changed? Use reattach() with the SLURM job id"
            )
        self._runs[str(run.path)] = run
        return run

    # -- submitting --------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> JobHandle:
        return self.submit_many([spec])[0]

    def submit_many(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Queue ``specs``; with ``array = true`` the ones sent now go out as one job array.

        The loop calls this once per turn with every candidate ready in that turn.

        Returns at once. A spec that has to wait for room under ``max_queued`` gets a handle
        with a local id (``local-...``) and is submitted by a later ``poll``.
        """
        with self.store.lock():
            runs = [self.store.new_run(spec, self.job_name(spec.experiment_id)) for spec in specs]
            for run in runs:
                self.store.enqueue(run)
            try:
                self._pump(raise_for=runs)
            except Exception as exc:
                for run in runs:  # nothing of a refused submission may linger or wait forever
                    self.store.dequeue(run)
                    self._set_final(run, JobState(JobStatus.FAILED, reason=f"not submitted: {exc}"))
                raise
            handles = []
            for run in runs:
                attempts = run.attempts()
                job_id = attempts[0]["job_id"] if attempts else LOCAL_PREFIX + run.token
                run.set_handle_id(job_id)
                self.store.index(job_id, run)
                handles.append(run.handle(self.name))
        return handles

    def _params(self, spec: JobSpec) -> dict[str, Any]:
        """submitit parameters for ``spec`` (everything but the job name and comment)."""
        o, res = self.opts, spec.resources
        params: dict[str, Any] = {
            "signal_delay_s": 5,
            "partition": o.partition,
            "account": o.account,
            "qos": o.qos,
            "constraint": o.constraint,
            "cpus_per_task": o.cpus_per_task or res.get("cpus"),
            "gpus_per_task": (o.gpus_per_task if o.gpus_per_task is not None
                              else None if o.gres or o.gpus else res.get("gpus")),
            "gres": o.gres,
            "cpus_per_gpu": o.cpus_per_gpu,
            "mem_per_gpu": o.mem_per_gpu,
            "mem": o.mem or (f"{res['memory_gb']}G" if res.get("memory_gb") else None),
            "time": o.minutes(spec.time_limit_s),
            "setup": list(o.setup),
            "srun_args": list(o.srun_args) or None,
            "array_parallelism": o.array_parallelism,
            # submitit always asks for a warning signal before the wall time (USR2 by default);
            # SLURM sends it to every process of the job, and USR2 kills a training script.
            # SIGCONT is harmless to every process.
            "additional_parameters": {"signal": "CONT@5", **parse_sbatch_args(o.sbatch_args),
                                      **({"gpus": o.gpus} if o.gpus is not None else {}),
                                      **o.additional_parameters},
        }
        if params["cpus_per_task"]:
            # srun of SLURM 22.05-23.02 does not inherit --cpus-per-task from sbatch: without
            # this the job step (the training) may be bound to a single core
            params["setup"].append(f"export SRUN_CPUS_PER_TASK={params['cpus_per_task']}")
        params["setup"] = params["setup"] or None
        if not params["gpus_per_task"]:
            params["gpus_per_task"] = None
        # "time" stays even when None: submitit would otherwise ask for its default, 5 minutes
        return {k: v for k, v in params.items() if v is not None or k == "time"}

    def _flags(self, spec: JobSpec | None = None) -> list[str]:
        """The sbatch flags of ``_params`` (for ``sbatch --test-only``)."""
        params = self._params(spec or JobSpec("check", ("true",), "."))
        extra = params.pop("additional_parameters", {})
        extra.pop("signal", None)
        for local_only in ("signal_delay_s", "setup", "srun_args", "array_parallelism"):
            params.pop(local_only, None)
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in params.items() if v is not None]
        flags += [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in extra.items()]
        return flags

    def _options_message(self, refusal: str, spec: JobSpec | None) -> str:
        option = cli.option_at_fault(refusal)
        where = "[backend.slurm]"
        if option == "time_limit" and self.opts.time_limit is None and spec is not None:
            minutes = self.opts.minutes(spec.time_limit_s)
            return (
                f"{where} time_limit: SLURM refused a wall time of {minutes} min (the job's own "
                f"time limit plus 2 min): {refusal}. Lower [run] time_limit or set "
                f"{where} time_limit within the partition's MaxTime (sinfo -o '%P %l')"
            )
        if option is None:
            return f"{where} sbatch refused the job: {refusal}. Check the options in {where}"
        value = getattr(self.opts, option, None) if option.isidentifier() else None
        shown = "" if value is None else f" = {value:g} s" if option == "time_limit" else f" = {value!r}"
        return (
            f"{where} {option}{shown}: SLURM refused the job: {refusal}. Fix {option} "
            "(see the partition's limits with `scontrol show partition`)"
        )

    def _pump(self, raise_for: Sequence[RunDir] = ()) -> None:
        """Submit waiting runs while there is room (call with the store lock held).

        An options error fails the runs concerned, and is raised if one of them is in
        ``raise_for`` (the runs ``submit`` is queuing); anything else (the controller is down,
        the QOS is full) leaves them queued for a later call.
        """
        queued = self.store.queued()
        if not queued or time.monotonic() < self._pump_retry_at:
            return
        try:
            room = len(queued)
            if self.opts.max_queued is not None:
                active = self._active_count()
                room = max(0, self.opts.max_queued - active) if self._rows_ok else 0
            batch: list[RunDir] = []
            seen: set[Path] = set()
            for entry, run in queued[:room]:
                if run.path in seen:  # one queued entry per run, ever: drop any duplicate
                    entry.unlink(missing_ok=True)
                elif run.final() is not None or run.cancelled or not run.exists():
                    entry.unlink(missing_ok=True)
                elif not self._recovered(run):
                    batch.append(run)
                seen.add(run.path)
            groups: dict[str, list[RunDir]] = {}
            for run in batch:
                key = repr(sorted(self._params(run.spec).items())) if self.opts.array else run.token
                groups.setdefault(key, []).append(run)
            for runs in groups.values():
                try:
                    self._sbatch(runs)
                except ConfigError as exc:
                    if {r.path for r in runs} & {r.path for r in raise_for}:
                        raise
                    for run in runs:
                        self.store.dequeue(run)
                        self._set_final(run, JobState(JobStatus.FAILED, reason=str(exc)))
            self._pump_error, self._pump_failures = None, 0
        except BackendError as exc:  # transient: retry later, waiting longer after each failure
            self._pump_failures += 1
            wait = slurm_reasons.backoff(self._pump_failures, PUMP_BACKOFF_S)
            log.warning("slurm backend: submission postponed by %g s: %s", wait, exc)
            self._pump_error = str(exc)
            self._pump_retry_at = time.monotonic() + wait

    def _sbatch(self, runs: list[RunDir]) -> None:
        import submitit

        from autolab.backends.slurm_job import run_job

        params = self._params(runs[0].spec)
        single = len(runs) == 1
        name = runs[0].name if single else f"autolab-{self.lab}-wave-{runs[0].token}"
        executor = submitit.SlurmExecutor(folder=self.store.submitit_dir, python=self.opts.python)
        executor._throttling = 0.0  # submitit sleeps 0.2 s between sbatch calls otherwise
        params["job_name"] = name
        if single:
            params["comment"] = str(runs[0].path)
        executor.update_parameters(**params)
        for i, run in enumerate(runs):
            run.set_submitting(name, None if single else i)

        def call(run: RunDir) -> Any:
            s = run.spec
            own_python = bool(self.opts.python) and bool(s.command) and s.command[0] == sys.executable
            return executor.submit(
                run_job, str(run.path), list(s.command), s.workdir, dict(s.env), s.time_limit_s,
                own_python,
            )

        try:
            if single:
                jobs = [call(runs[0])]
            else:
                with executor.batch():
                    jobs = [call(run) for run in runs]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
            for run in runs:
                run.clear_submitting()
            refusal = cli.sbatch_error_lines(str(exc))
            if re.search(r"submit limit|MaxSubmit", refusal, re.IGNORECASE):
                raise BackendError(
                    f"the QOS takes no more jobs now ({refusal}); set [backend.slurm] "
                    "max_queued below its MaxSubmitJobs to wait locally instead"
                ) from None
            if slurm_reasons.transient_refusal(refusal):
                raise BackendError(f"sbatch failed (will retry): {refusal}") from None
            # everything else is permanent: stop with SLURM's words and the option to fix
            raise ConfigError(self._options_message(refusal, runs[0].spec)) from None
        for run, job in zip(runs, jobs, strict=True):
            self._record(run, str(job.job_id))

    def _record(self, run: RunDir, job_id: str) -> None:
        run.add_attempt(job_id)
        self._recent[job_id] = time.time()
        self.store.index(job_id, run)
        run.clear_submitting()
        self.store.dequeue(run)

    def _recovered(self, run: RunDir) -> bool:
        """A run whose submission was cut short (a crash during sbatch) that SLURM did receive."""
        marker = run.submitting()
        if marker is None:
            return False
        known = {a["job_id"] for a in run.attempts()}
        rows = dict(cli.squeue(self.user, names=[marker["name"]]))
        if self._accounting is not False:
            acct = cli.sacct(names=[marker["name"]])
            self._accounting = acct is not None
            rows.update(acct or {})
        index = marker.get("index")
        found = [
            r.job_id for r in rows.values()
            if r.job_id not in known
            and (r.comment == str(run.path) if index is None else r.job_id.endswith(f"_{index}"))
        ]
        if not found:
            run.clear_submitting()
            return False
        self._record(run, max(found, key=lambda j: [int(x) for x in j.split("_")]))
        return True

    def _active_count(self) -> int:
        """Our user's jobs that count against the queue limit (pending or running)."""
        self._refresh(max_age=self.opts.poll_interval_s)
        active = sum(1 for r in self._rows.values() if r.state not in _ENDED)
        return active + sum(1 for j in self._recent if j not in self._rows)

    # -- watching ----------------------------------------------------------------------------
    def _refresh(self, max_age: float) -> bool:
        """Ask squeue again when the last answer is older than ``max_age``; True when it did."""
        now = time.monotonic()
        if now - self._rows_at < max_age or now < self._squeue_retry_at:
            return False
        wall = time.time()
        try:
            self._rows = cli.squeue(self.user)
        except BackendError as exc:  # an outage: back off instead of hammering the controller
            self._squeue_failures += 1
            wait = slurm_reasons.backoff(self._squeue_failures, max(1.0, self.opts.poll_interval_s))
            log.warning("slurm backend: %s (next try in %g s)", exc, wait)
            self._rows_ok, self._squeue_retry_at = False, now + wait
            return True
        self._squeue_failures = 0
        self._rows_ok, self._rows_at, self._rows_wall = True, time.monotonic(), wall
        self._recent = {j: t for j, t in self._recent.items() if t >= wall}
        return True

    def tick(self, jobs: int) -> float:
        """Seconds between two squeue calls with ``jobs`` live jobs: grows with their number
        (0.01 s per job) so that a big sweep does not load the controller or the filesystem."""
        return max(self.opts.poll_interval_s, 0.01 * jobs)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        runs = {h.job_id: self._run(h) for h in handles}
        if self.store.has_queue():
            with self.store.lock():
                self._pump()
        live = [r for r in runs.values() if self._final_of(r) is None]
        fresh = False
        if any(r.attempts() for r in live):
            fresh = self._refresh(max_age=self.tick(len(live)))
            if fresh:
                self._ask_accounting(live)
        out = {}
        for job_id, run in runs.items():
            key = str(run.path)
            # between two squeue answers nothing new is known: no file is read again
            if fresh or key not in self._states or self._final_of(run) is not None:
                self._states[key] = self._state(run)
            out[job_id] = self._states[key]
        return out

    def _ask_accounting(self, runs: list[RunDir]) -> None:
        """One sacct call for the jobs squeue no longer shows (purged after MinJobAge)."""
        if self._accounting is False or not self._rows_ok:
            return
        missing = []
        for run in runs:
            attempts = run.attempts()
            if attempts:
                job_id, at = attempts[-1]["job_id"], attempts[-1]["at"]
                if job_id not in self._rows and job_id not in self._acct and at < self._rows_wall:
                    missing.append(job_id)
        if not missing or time.monotonic() < self._sacct_retry_at:
            return
        try:
            rows = cli.sacct(job_ids=missing)
        except BackendError as exc:  # slurmdbd down: back off like squeue
            self._sacct_failures += 1
            wait = slurm_reasons.backoff(self._sacct_failures, max(1.0, self.opts.poll_interval_s))
            log.warning("slurm backend: %s (next try in %g s)", exc, wait)
            self._sacct_retry_at = time.monotonic() + wait
            return
        self._sacct_failures = 0
        self._accounting = rows is not None
        self._acct.update({k: v for k, v in (rows or {}).items() if v.state in _ENDED})

    def _final_of(self, run: RunDir) -> JobState | None:
        key = str(run.path)
        if key not in self._final:
            state = run.final()
            if state is None:
                return None
            self._final[key] = state
        return self._final[key]

    def _set_final(self, run: RunDir, state: JobState) -> JobState:
        run.set_final(state)
        self._final[str(run.path)] = state
        return state

    def _hardware_of(self, run: RunDir, job_id: str | None, row: Row | None) -> dict[str, str]:
        """What the job recorded about its node, once per attempt; squeue's node list before."""
        key = f"{run.path}|{job_id}"
        if key not in self._hardware:
            hw = run.hardware()
            if not hw or (job_id is not None and hw.get("slurm_job_id") != job_id):
                return {"node": row.nodes} if row and row.nodes else {}
            self._hardware[key] = hw
        return self._hardware[key]

    def _state(self, run: RunDir) -> JobState:
        final = self._final_of(run)
        if final is not None:
            return final
        attempts = run.attempts()
        if not attempts:
            if run.cancelled:
                return self._set_final(
                    run, JobState(JobStatus.CANCELLED, reason="cancelled before it was submitted"))
            if not self.store.is_queued(run) and run.submitting() is None:
                return self._set_final(run, JobState(
                    JobStatus.FAILED, reason="never submitted (the submitting process stopped first)"))
            reason = (f"waiting to submit: {self._pump_error}" if self._pump_error else
                      f"waiting for room in the SLURM queue (max_queued = {self.opts.max_queued})")
            return JobState(JobStatus.PENDING, reason=reason)
        current = attempts[-1]
        job_id = current["job_id"]
        row = self._rows.get(job_id) or self._acct.get(job_id)
        restarts = row.restarts if row else int(current.get("restarts", 0))
        retries = len(attempts) - 1 + sum(int(a.get("restarts", 0)) for a in attempts[:-1]) + restarts
        # the job's own files are read only once squeue no longer shows it pending or running
        # (ended, completing or gone): a thousand live jobs cost no file reads per poll
        in_queue = row is not None and row.state not in _ENDED and row.state != "COMPLETING"
        exit_rec = None if in_queue else run.exit_record()
        if exit_rec and (exit_rec.get("job_id") != job_id or exit_rec.get("restart", 0) != restarts):
            exit_rec = None  # from an earlier attempt
        started = None if in_queue else run.started()
        if started and started.get("job_id") != job_id:
            started = None
        pending = row is not None and row.state in _PENDING
        common: dict[str, Any] = {
            "started_at": None if pending else (started or {}).get("started_at") or (
                row.start if row else None),
            "hardware": {} if pending else self._hardware_of(run, job_id, row),
        }
        ended: dict[str, Any] = {
            **common,
            "finished_at": (exit_rec or {}).get("finished_at") or (row.end if row else None) or time.time(),
        }
        slurm_state = row.state if row else None

        if (slurm_state is None or slurm_state in _ENDED) and run.cancelled:
            return self._set_final(run, JobState(JobStatus.CANCELLED, reason="cancelled", **ended))
        if exit_rec and slurm_state not in _KILLED:
            if exit_rec.get("timed_out"):
                limit = run.spec.time_limit_s
                return self._set_final(run, JobState(
                    JobStatus.TIMEOUT, reason=f"ran past its time limit of {limit:g} s and was stopped",
                    exit_code=exit_rec.get("returncode"), **ended))
            code = exit_rec.get("returncode")
            clean_end = not exit_rec.get("signals") and code is not None and code >= 0
            if clean_end or slurm_state in _ENDED or (slurm_state is None and self._rows_ok):
                if code == 0 and clean_end:
                    return self._set_final(run, JobState(JobStatus.SUCCEEDED, exit_code=0, **ended))
                return self._set_final(run, self._failed(run, code, exit_rec, ended))
        if slurm_state is None:
            if self._rows_ok and current["at"] < self._rows_wall:
                return self._set_final(run, JobState(
                    JobStatus.FAILED, **ended,
                    reason=f"SLURM no longer knows job {job_id} and it left no exit record: it was "
                    "probably cancelled, killed at its time limit or lost with its node (this "
                    "cluster keeps no accounting to tell which)"))
            if not self._rows_ok and self._rows_at == float("-inf"):
                return JobState(JobStatus.UNKNOWN, reason="squeue has not answered yet", **common)
            return JobState(JobStatus.PENDING, reason="submitted", **common)
        return self._from_slurm(run, row, job_id, retries, common, ended)  # type: ignore[arg-type]

    def _failed(self, run: RunDir, code: int | None, exit_rec: Mapping[str, Any],
                ended: dict[str, Any]) -> JobState:
        if code is not None and code < 0:
            reason = f"killed by signal {-code}"
        else:
            reason = f"exit code {code}"
        if exit_rec.get("signals"):
            reason += f" after SLURM sent {', '.join(exit_rec['signals'])}"
        job_id = exit_rec.get("job_id", "")
        if code == -9 and (oom := self._oom(job_id)):  # the kernel's or cgroup's OOM killer
            return JobState(JobStatus.OOM, reason=oom, exit_code=code, **ended)
        last = run.last_log_line()
        return JobState(JobStatus.FAILED, reason=reason + (f": {last}" if last else ""),
                        exit_code=code, **ended)

    def _oom(self, job_id: str) -> str | None:
        """Why the job was killed for memory, from SLURM's messages in the job's error log."""
        err = self.store.submitit_dir / f"{job_id}_0_log.err"
        for line in reversed(_tail(err, lines=20).split(" | ")):
            if _OOM_MESSAGE.search(line):
                mem = f" (mem = {self.opts.mem!r})" if self.opts.mem else ""
                return (f"SLURM killed job {job_id} for exceeding its memory{mem}: {line}; "
                        "raise [backend.slurm] mem")
        return None

    def _from_slurm(self, run: RunDir, row: Row, job_id: str, retries: int,
                    common: dict[str, Any], ended: dict[str, Any]) -> JobState:
        state, key = row.state, str(run.path)
        if state in _PENDING:
            if row.restarts > 0:
                if retries > self.opts.max_retries:
                    self._scancel(job_id)
                    return self._set_final(run, JobState(JobStatus.PREEMPTED, **ended, reason=(
                        f"SLURM requeued job {job_id} {row.restarts} times (preemption or node "
                        f"failure); gave up after max_retries = {self.opts.max_retries}")))
                return JobState(JobStatus.PENDING, reason=(
                    f"requeued by SLURM after preemption or node failure "
                    f"(retry {retries} of {self.opts.max_retries})"))
            fix = self._never_clears(row)
            if fix:
                self._scancel(job_id)
                return self._set_final(run, JobState(JobStatus.FAILED, **ended, reason=(
                    f"SLURM will never start job {job_id}: it is pending with reason "
                    f"{row.reason!r}; {fix}")))
            return JobState(JobStatus.PENDING, reason=f"pending in SLURM: {row.reason}" if row.reason
                            and row.reason != "None" else None)
        if state not in _ENDED:
            reason = "suspended" if state == "SUSPENDED" else None
            return JobState(JobStatus.RUNNING, reason=reason, **common)
        if state in ("CANCELLED", "REVOKED"):
            return self._set_final(
                run, JobState(JobStatus.CANCELLED, reason=f"cancelled ({state} in SLURM)", **ended))
        if state in ("TIMEOUT", "DEADLINE"):
            return self._set_final(run, JobState(
                JobStatus.TIMEOUT, **ended,
                reason=f"SLURM stopped job {job_id} at its wall time ({state}); raise [backend.slurm] "
                "time_limit or lower [run] time_limit"))
        if state == "OUT_OF_MEMORY":
            return self._set_final(run, JobState(JobStatus.OOM, **ended, reason=self._oom(job_id) or (
                f"SLURM killed job {job_id} for exceeding its memory; raise [backend.slurm] mem")))
        if state in _RETRYABLE:
            if retries < self.opts.max_retries:
                self._resubmit(run, job_id, row.restarts)
                return JobState(JobStatus.PENDING, reason=(
                    f"resubmitted after {state} (retry {retries + 1} of {self.opts.max_retries})"))
            return self._set_final(run, JobState(
                JobStatus.PREEMPTED, **ended,
                reason=f"job {job_id} ended {state}; gave up after max_retries = {self.opts.max_retries}"))
        # COMPLETED, FAILED or SPECIAL_EXIT without an exit record (yet). Without cgroups, SLURM
        # kills a job over its memory (JobAcctGatherParams=OverMemoryKill) but calls it FAILED.
        oom = self._oom(job_id)
        if oom:
            return self._set_final(run, JobState(JobStatus.OOM, reason=oom, **ended))
        first_seen = self._ended_seen.setdefault(key, time.monotonic())
        if time.monotonic() - first_seen < EXIT_RECORD_GRACE_S and run.started():
            return JobState(JobStatus.RUNNING, reason="finishing", **common)
        err = self.store.submitit_dir / f"{job_id}_0_log.err"
        tail = _tail(err)
        where = "before its command started" if not run.started() else "without an exit record"
        return self._set_final(run, JobState(
            JobStatus.FAILED, exit_code=row.exit_code, **ended,
            reason=f"SLURM job {job_id} ended {state} {where}; see {err}" + (f": {tail}" if tail else "")))

    def _never_clears(self, row: Row) -> str | None:
        """What to change when ``row`` (a pending job) waits for something that never comes."""
        fix = slurm_reasons.permanent_pending(row.reason)
        if fix or not slurm_reasons.nodes_unavailable(row.reason):
            return fix
        partition = row.partition or self.opts.partition or ""
        asked, usable = self._usable.get(partition, (float("-inf"), True))
        if time.monotonic() - asked > 60:
            try:
                usable = cli.partition_has_usable_node(partition) if partition else True
            except BackendError:
                usable = True
            self._usable[partition] = (time.monotonic(), usable)
        if usable:
            return None
        return (f"every node of partition {partition!r} is down or drained (sinfo --all -N -p "
                f"{partition} -o '%N %T %E'): set [backend.slurm] partition to another one, or "
                "ask the admins when the nodes return")

    def _scancel(self, *job_ids: str) -> None:
        """scancel that warns instead of raising: a failed cancel never ends ``autolab run``."""
        try:
            cli.scancel(*job_ids)
        except BackendError as exc:
            log.warning("slurm backend: %s; cancel the jobs by hand (scancel %s)", exc, " ".join(job_ids))

    def _resubmit(self, run: RunDir, job_id: str, restarts: int) -> None:
        with self.store.lock():
            attempts = run.attempts()
            # once per ended attempt: a postponed resubmission stays one queue entry however
            # often polls see the old job PREEMPTED (and another process may have done it)
            if attempts and attempts[-1]["job_id"] == job_id and not self.store.is_queued(run):
                run.set_restarts(job_id, restarts)
                self.store.enqueue(run, front=True)
            self._pump()

    # -- the rest of the interface -----------------------------------------------------------
    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        run = self._run(handle)
        try:
            with open(run.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return LogChunk("", since)
        cut = _complete_utf8(data)  # a character still being written waits for the next call
        return LogChunk(data[:cut].decode("utf-8", "replace"), since + cut)

    def cancel(self, handle: JobHandle) -> None:
        run = self._run(handle)
        if self._final_of(run) is not None:
            return
        with self.store.lock():
            run.mark_cancelled()
            self.store.dequeue(run)
            attempts = run.attempts()
        if attempts:  # every SLURM job the experiment ever had (retries included)
            self._scancel(*dict.fromkeys(a["job_id"] for a in attempts))
        self._rows_at = float("-inf")  # see the cancellation on the next poll

    def reattach(self, job_id: str) -> JobHandle | None:
        run = self.store.lookup(job_id)
        if run is None and re.fullmatch(r"\d+(_\d+)?", job_id):
            self._refresh(max_age=0)
            row = self._rows.get(job_id)
            if row is None and self._accounting is not False:
                acct = cli.sacct(job_ids=[job_id])
                self._accounting = acct is not None
                row = (acct or {}).get(job_id)
            if row is not None and row.comment and RunDir(row.comment).exists():
                run = RunDir(row.comment)
                self.store.index(job_id, run)
        return None if run is None else run.handle(self.name)

    def find(self, experiment_id: str) -> JobHandle | None:
        """The latest submission of ``experiment_id``: from SLURM by job name, else from disk."""
        name = self.job_name(experiment_id)
        rows = dict(cli.squeue(self.user, names=[name]))
        if self._accounting is not False:
            acct = cli.sacct(names=[name])
            self._accounting = acct is not None
            rows.update({k: v for k, v in (acct or {}).items() if k not in rows})
        with self.store.lock():
            for row in sorted(rows.values(), key=lambda r: int(r.job_id.split("_")[0]), reverse=True):
                if row.comment and RunDir(row.comment).exists():
                    run = RunDir(row.comment)
                    known = {a["job_id"] for a in run.attempts()}
                    if row.job_id not in known and run.final() is None:
                        self._record(run, row.job_id)  # a crash between sbatch and recording it
                    return run.handle(self.name)
            for run in reversed(self.store.runs_for(experiment_id)):
                self._recovered(run)
                if run.attempts() or self.store.is_queued(run) or run.final() is not None:
                    return run.handle(self.name)
        return None  # never reached the queue: submitting it again is safe

    def slot_of(self, handle: JobHandle) -> str:
        try:
            run = self._run(handle)
            attempts = run.attempts()
            hw = self._hardware_of(run, attempts[-1]["job_id"] if attempts else None, None)
        except BackendError:
            return self.name
        return hw.get("node", self.name)


def _complete_utf8(data: bytes) -> int:
    """The length of ``data`` without an incomplete UTF-8 sequence at its end."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead byte
            continue
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n if back >= need else n - back
        return n
    return n


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    keep = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(keep)[-600:]


@hookimpl
def autolab_register_backends(register: Any) -> None:
    register(SlurmBackend)

"""Submitting SLURM jobs: the local queue under ``max_queued``, job arrays, sbatch refusals.

:class:`SlurmSubmission` is one half of :class:`~autolab.backends.slurm.SlurmBackend` (the
other, its base, is :class:`~autolab.backends.slurm_watch.SlurmWatching`).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autolab.backends import slurm_cli as cli
from autolab.backends import slurm_reasons
from autolab.backends.slurm_options import SlurmOptions, parse_sbatch_args
from autolab.backends.slurm_store import LOCAL_PREFIX, RunDir
from autolab.backends.slurm_watch import _ENDED, SlurmWatching, log
from autolab_core.errors import BackendError, ConfigError
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus

#: Seconds before trying sbatch again after it failed for a reason other than the options (an
#: unreachable controller makes each try take ~10 s).
PUMP_BACKOFF_S = 30.0


class SlurmSubmission(SlurmWatching):
    """``submit``/``submit_many``: sbatch through submitit, one job or one array per wave."""

    lab: str
    _recent: dict[str, float]
    _pump_error: str | None
    _pump_retry_at: float
    _pump_failures: int

    def job_name(self, experiment_id: str) -> str:
        return f"autolab-{self.lab}-{experiment_id}"

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
            # an experiment's own resources (``autolab try --gpus``) win over the lab's options
            "cpus_per_task": res.get("cpus") or o.cpus_per_task,
            **_gpu_params(o, res.get("gpus")),
            "cpus_per_gpu": o.cpus_per_gpu,
            "mem_per_gpu": o.mem_per_gpu,
            "mem": f"{res['memory_gb']}G" if res.get("memory_gb") else o.mem,
            "time": o.minutes(spec.time_limit_s),
            "setup": list(o.setup),
            "srun_args": list(o.srun_args) or None,
            "array_parallelism": o.array_parallelism,
            # submitit always asks for a warning signal before the wall time (USR2 by default);
            # SLURM sends it to every process of the job, and USR2 kills a training script.
            # SIGCONT is harmless to every process.
            "additional_parameters": {"signal": "CONT@5", **parse_sbatch_args(o.sbatch_args),
                                      **_gpus_flag(o, res.get("gpus")),
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



def _gpu_params(o: SlurmOptions, gpus: Any) -> dict[str, Any]:
    """``gpus_per_task``/``gres`` for an experiment asking ``gpus`` (None: the lab's options).

    A count asked by the experiment replaces the count of the lab's ``gres`` (keeping its GPU
    type: ``gpu:a100:1`` -> ``gpu:a100:2``) or ``gpus_per_task``."""
    if gpus is None:
        return {"gpus_per_task": o.gpus_per_task, "gres": o.gres}
    if o.gres:
        kind = o.gres.rsplit(":", 1)[0] if re.search(r":\d+$", o.gres) else o.gres
        return {"gpus_per_task": None, "gres": f"{kind}:{int(gpus)}"}
    if o.gpus is not None:
        return {"gpus_per_task": None, "gres": None}  # the count goes into --gpus
    return {"gpus_per_task": int(gpus), "gres": None}


def _gpus_flag(o: SlurmOptions, gpus: Any) -> dict[str, Any]:
    """The ``--gpus`` sbatch flag: the lab's ``gpus`` with the experiment's count, if any."""
    if o.gpus is None:
        return {}
    if gpus is None or o.gres:
        return {"gpus": o.gpus}
    kind = str(o.gpus).rsplit(":", 1)[0] + ":" if ":" in str(o.gpus) else ""
    return {"gpus": f"{kind}{int(gpus)}"}

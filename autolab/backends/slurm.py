"""The ``slurm`` backend: jobs on a SLURM cluster, submitted through submitit.

Each job runs :func:`autolab.backends.slurm_job.run_job` on a compute node, which runs the
command in the experiment's checkout (on the shared filesystem), streams its output to a log
file, enforces the time limit and leaves an exit record. The backend watches jobs itself, with
one ``squeue`` call for all of them at most every ``poll_interval_s`` (submitit's watcher uses
``sacct``, backs off to 600 s and never sees cancelled or timed-out jobs on a cluster without
accounting), plus the exit records; ``sacct`` is asked only about jobs squeue has forgotten.

Jobs are named ``autolab-<lab>-<experiment id>`` so that :meth:`SlurmBackend.find` can tell a
restarted orchestrator that an experiment was already submitted.

The class is assembled from :mod:`~autolab.backends.slurm_watch` (squeue/sacct, job states) and
:mod:`~autolab.backends.slurm_submit` (sbatch, arrays, the local queue); this module adds
construction, checks, logs, cancel, reattach/find and cleanup. Options: :class:`SlurmOptions`.
"""

from __future__ import annotations

import getpass
import importlib.util
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autolab.backends import slurm_cleanup, slurm_preflight
from autolab.backends import slurm_cli as cli
from autolab.backends.slurm_cli import Row
from autolab.backends.slurm_options import SlurmOptions
from autolab.backends.slurm_store import RunDir, Store
from autolab.backends.slurm_submit import SlurmSubmission
from autolab_core import hookimpl
from autolab_core.errors import BackendError
from autolab_core.interfaces import PluginContext
from autolab_core.models import JobHandle, JobState, LogChunk


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "lab"


class SlurmBackend(SlurmSubmission):
    """Runs jobs on a SLURM cluster through submitit; see ``docs/slurm.md``."""

    name = "slurm"
    runs_on_this_machine = False
    queues = True
    description = "SLURM cluster through submitit (sbatch, squeue, scancel)"
    options_class = SlurmOptions
    opts: SlurmOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
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


@hookimpl
def autolab_register_backends(register: Any) -> None:
    register(SlurmBackend)

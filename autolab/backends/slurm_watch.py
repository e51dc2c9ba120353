"""Watching SLURM jobs: one squeue per poll interval, sacct for forgotten jobs, exit records.

:class:`SlurmWatching` turns what SLURM and the job's own files say into a ``JobState``:
pending reasons, preemption retries, OOM kills, wall-time ends. It is the base of
:class:`~autolab.backends.slurm_submit.SlurmSubmission`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autolab.backends import slurm_cli as cli
from autolab.backends import slurm_reasons
from autolab.backends.slurm_cli import Row
from autolab.backends.slurm_options import SlurmOptions
from autolab.backends.slurm_store import RunDir, Store
from autolab_core.errors import BackendError
from autolab_core.interfaces import JobBackend
from autolab_core.models import JobHandle, JobState, JobStatus

log = logging.getLogger("autolab.backends.slurm")


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


class SlurmWatching(JobBackend):
    """``poll`` and the state machine behind it (see the module docstring)."""

    opts: SlurmOptions
    store: Store
    user: str
    _rows: dict[str, Row]
    _rows_at: float
    _rows_wall: float
    _rows_ok: bool
    _acct: dict[str, Row]
    _accounting: bool | None
    _final: dict[str, JobState]
    _hardware: dict[str, dict[str, str]]
    _ended_seen: dict[str, float]
    _recent: dict[str, float]
    _squeue_failures: int
    _squeue_retry_at: float
    _sacct_failures: int
    _sacct_retry_at: float
    _states: dict[str, JobState]
    _usable: dict[str, tuple[float, bool]]

    def _run(self, handle: JobHandle) -> RunDir:
        raise NotImplementedError

    def _pump(self, raise_for: Sequence[RunDir] = ()) -> None:
        raise NotImplementedError

    def _record(self, run: RunDir, job_id: str) -> None:
        raise NotImplementedError

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



def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    keep = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(keep)[-600:]

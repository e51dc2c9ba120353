"""A :class:`JobBackend` whose jobs are detached local processes in a :class:`JobDirectory`.

Subclasses set ``self.jobs`` in ``__init__`` (with their own slots, folder and grace period) and
inherit the rest: submit, poll, logs, cancel, reattach, find and slot_of are the directory's.
``local`` and the example plugin are built on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from autolab_core.interfaces import JobBackend
from autolab_core.jobdir import JobDirectory, reap_children
from autolab_core.models import JobHandle, JobSpec, JobState, LogChunk


class DirectoryBackend(JobBackend):
    """Jobs as processes on this machine under detached supervisors (they survive restarts)."""

    jobs: JobDirectory
    runs_on_this_machine = True
    takes_stdin = True  # the supervisor pipes JobSpec.stdin (the result key) to the job

    def submit(self, spec: JobSpec) -> JobHandle:
        return self.jobs.submit(spec)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        return self.jobs.poll(handles)

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        return self.jobs.logs(handle.job_id, since)

    def cancel(self, handle: JobHandle) -> None:
        """Ask the job's supervisor to stop it (SIGTERM, grace, SIGKILL); returns at once."""
        self.jobs.cancel(handle.job_id)

    def cancel_all(self, wait_s: float = 0.0) -> list[str]:
        """Cancel every unfinished job of this directory; wait up to ``wait_s`` for them."""
        return self.jobs.cancel_all(wait_s)

    def reattach(self, job_id: str) -> JobHandle | None:
        return self.jobs.reattach(job_id)

    def find(self, experiment_id: str) -> JobHandle | None:
        """The newest job submitted for ``experiment_id``."""
        return self.jobs.find(experiment_id)

    def slot_of(self, handle: JobHandle) -> str:
        return self.jobs.slot_of(handle)

    def close(self) -> None:
        """Leave running jobs alone: a restarted orchestrator takes them over."""
        reap_children()

"""Following HF jobs: states (scrubbed), ``LOST`` after a confirmed 404, logs, GPU metrics.

A mixin of :class:`autolab.backends.hf_jobs.HfJobsBackend`, kept apart to keep modules small.
"""

from __future__ import annotations

import logging
from typing import Any

from autolab.backends.hf_state import LogFollower, MetricsFollower, gpu_summary, job_state
from autolab_core.errors import BackendError
from autolab_core.models import JobHandle, JobState, JobStatus, LogChunk, MetricPoint


class HfWatching:
    """Job states, logs and metrics for a backend that has ``api()``, ``scrub()``, ``opts``."""

    opts: Any
    _followers: dict[str, LogFollower]
    _metrics: dict[str, MetricsFollower]
    _final_logs: dict[str, list[str]]
    _terminal: set[str]
    _missing: dict[str, int]
    _metrics_sent: dict[str, int]

    def api(self) -> Any:
        raise NotImplementedError

    def namespace(self) -> str:
        raise NotImplementedError

    def scrub(self, text: str) -> str:
        raise NotImplementedError

    def _price_or_none(self, flavor: str) -> float | None:
        raise NotImplementedError

    def clean_code(self, older_than_s: float | None = None, *, orphans: bool = False) -> list[str]:
        raise NotImplementedError

    def _inspect(self, job_id: str, namespace: str | None = None) -> Any | None:
        raise NotImplementedError

    def hardware(self) -> dict[str, Any]:
        raise NotImplementedError

    def _has_gpu(self, flavor: str) -> bool:
        try:
            return getattr(self.hardware().get(flavor), "accelerator", None) is not None
        except Exception:  # no price list: sample anyway, metrics are best effort
            return True

    def _ns(self, handle: JobHandle) -> str:
        return str(handle.data.get("namespace") or self.namespace())

    def _state(self, info: Any, handle: JobHandle | None = None) -> JobState:
        flavor = str(getattr(info.flavor, "value", info.flavor) or self.opts.flavor)
        limit = handle.data.get("time_limit_s") if handle else None
        state = job_state(info, time_limit_s=limit, price=self._price_or_none(flavor))
        extra: dict[str, Any] = {}
        if handle is not None and handle.data.get("artifacts"):
            extra["artifacts"] = handle.data["artifacts"]
        if state.status is JobStatus.RUNNING and self.opts.gpu_metrics and self._has_gpu(flavor):
            if info.id not in self._metrics:
                self._metrics[info.id] = MetricsFollower(self.api(), info.id,
                                                         (handle and self._ns(handle)) or
                                                         self.namespace())
        if state.status.terminal:
            self._terminal.add(info.id)
            extra.update(self._gpu_means(info.id))
        reason = self.scrub(state.reason) if state.reason else state.reason
        return JobState(status=state.status, reason=reason, exit_code=state.exit_code,
                        started_at=state.started_at, finished_at=state.finished_at,
                        hardware={**state.hardware, **extra}, cost_usd=state.cost_usd)

    def _gpu_means(self, job_id: str) -> dict[str, float]:
        follower = self._metrics.get(job_id)
        if follower is None:
            return {}
        follower.stop()
        gpus = [gpu_summary(s) for _, s in follower.samples]
        gpus = [g for g in gpus if g]
        if not gpus:
            return {}
        return {"gpu_util_mean": round(sum(g["gpu_util"] for g in gpus) / len(gpus), 1)}

    def system_metrics(self, handle: JobHandle) -> list[MetricPoint]:
        """The job's GPU samples not returned before, for the metric store (step = seconds
        since sampling started): ``sys/gpu_util`` (%, mean over GPUs), ``sys/gpu_mem_gb``."""
        follower = self._metrics.get(handle.job_id)
        if follower is None:
            return []
        sent = self._metrics_sent.get(handle.job_id, 0)
        samples = follower.samples[sent:]
        self._metrics_sent[handle.job_id] = sent + len(samples)
        return [MetricPoint(handle.experiment_id, int(t), f"sys/{name}", value)
                for t, sample in samples for name, value in gpu_summary(sample).items()]

    def cleanup(self) -> list[str]:
        """The loop's hourly chore: ``clean_code`` after ``keep_code``; never raises."""
        try:
            return list(self.clean_code())
        except Exception as exc:  # housekeeping: never fail a session on it
            logging.getLogger(__name__).warning(
                "hf-jobs: could not delete old code archives: %s", self.scrub(str(exc)))
            return []

    def _missing_state(self, job_id: str) -> JobState:
        """Unknown on the first 404, LOST (terminal) when the next poll confirms it."""
        self._missing[job_id] = self._missing.get(job_id, 0) + 1
        if self._missing[job_id] < 2:
            return JobState(JobStatus.UNKNOWN, reason=f"job {job_id} not found on HF Jobs; "
                                                       "checking again at the next poll")
        self._terminal.add(job_id)
        self._final_logs.setdefault(job_id, [])
        return JobState(JobStatus.LOST, reason=f"job {job_id} is gone from HF Jobs (404 on two "
                                               "polls): it was deleted or expired")

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        """Log lines after line ``since`` (secrets scrubbed); never waits for a running job.

        While the job runs, a :class:`LogFollower` thread collects its stream. Once a poll (or
        this call) has seen the job end, the log is replayed once, completely, and cached.
        """
        job_id = handle.job_id
        follower = self._followers.get(job_id)
        if follower is None and job_id not in self._terminal and job_id not in self._final_logs:
            self._is_terminal(handle)  # records in self._terminal that it ended
        lines = self._final_logs.get(job_id)
        if lines is None:
            if job_id in self._terminal:
                lines = self._final_logs[job_id] = self._replay(handle)
                if follower is not None:
                    follower.stop()
                    del self._followers[job_id]
                    if len(follower.lines) > len(lines):
                        lines = self._final_logs[job_id] = follower.lines
            else:
                if follower is None or follower.error is not None:
                    follower = LogFollower(self.api(), job_id, self._ns(handle))
                    self._followers[job_id] = follower
                lines = follower.lines
        new = lines[since:]
        return LogChunk(self.scrub("".join(line + "\n" for line in new)), since + len(new))

    def _replay(self, handle: JobHandle) -> list[str]:
        """The whole log of a finished job (the stream ends once it is replayed)."""
        try:
            return list(self.api().fetch_job_logs(job_id=handle.job_id, namespace=self._ns(handle),
                                                  follow=False))
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return []
            raise BackendError(self.scrub(f"hf-jobs: cannot read the log of job {handle.job_id}: "
                                          f"{exc}")) from exc

    def _is_terminal(self, handle: JobHandle) -> bool:
        info = self._inspect(handle.job_id, handle.data.get("namespace"))
        if info is None:  # gone: nothing to read
            self._terminal.add(handle.job_id)
            self._final_logs[handle.job_id] = []
            return True
        return self._state(info, handle).status.terminal

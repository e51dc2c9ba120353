"""HF Jobs stages and messages as autolab job states; prices (billed by the minute); the
background readers of a running job's log and GPU metrics."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any

from autolab.backends.hf_code import TIMEOUT_EXIT
from autolab_core.models import JobState, JobStatus

log = logging.getLogger(__name__)

_EXIT = re.compile(r"exit code:?\s*(-?\d+)", re.IGNORECASE)
_TIMEOUT_WORDS = ("timeout", "timed out", "time limit", "deadline")
_OOM_WORDS = ("oomkilled", "out of memory", "oom-kill")
_SIMPLE = {
    "SCHEDULING": JobStatus.PENDING,
    "RUNNING": JobStatus.RUNNING,
    "COMPLETED": JobStatus.SUCCEEDED,
}
_PER_HOUR = {"second": 3600.0, "minute": 60.0, "hour": 1.0}


def classify(
    stage: str, message: str | None, running_s: float | None = None,
    time_limit_s: float | None = None,
) -> tuple[JobStatus, str | None, int | None]:
    """(status, reason, exit code) for a job's stage and status message.

    ``Job failed with exit code: 137. Reason: OOMKilled`` is an OOM; a message about a timeout,
    exit code 124 (``timeout`` in the job script) or a kill at the time limit is a TIMEOUT.
    """
    stage = str(getattr(stage, "value", stage)).upper()
    if stage in _SIMPLE:
        return _SIMPLE[stage], None, 0 if stage == "COMPLETED" else None
    if stage == "CANCELED":
        return JobStatus.CANCELLED, message or "cancelled on Hugging Face Jobs", None
    if stage == "DELETED":
        return JobStatus.CANCELLED, message or "the job was deleted on Hugging Face Jobs", None
    if stage != "ERROR":
        return JobStatus.UNKNOWN, f"unknown HF Jobs stage {stage!r}", None
    text = message or "the job failed and HF Jobs gave no message"
    match = _EXIT.search(text)
    code = int(match.group(1)) if match else None
    low = text.lower()
    if any(word in low for word in _OOM_WORDS):
        return JobStatus.OOM, text, code
    at_limit = (
        code == 137 and running_s is not None and time_limit_s is not None
        and running_s >= time_limit_s
    )
    if any(word in low for word in _TIMEOUT_WORDS) or code == TIMEOUT_EXIT or at_limit:
        limit = f" (limit {time_limit_s:.0f}s)" if time_limit_s else ""
        return JobStatus.TIMEOUT, f"time limit reached{limit}: {text}", code
    return JobStatus.FAILED, text, code


def price_per_hour(hardware: Any) -> float:
    """USD per hour of a ``JobHardwareInfo`` (the Hub lists a price per ``unit_label``)."""
    factor = _PER_HOUR.get(str(hardware.unit_label).lower().rstrip("s"))
    if factor is None:
        raise ValueError(f"unknown price unit {hardware.unit_label!r} for {hardware.name}")
    return float(hardware.unit_cost_usd) * factor


def billed_usd(price_per_hour: float, seconds: float) -> float:
    """What ``seconds`` of a flavor costs: HF Jobs bills by the started minute."""
    minutes = math.ceil(max(0.0, seconds) / 60.0 - 1e-9)
    return round(price_per_hour / 60.0 * minutes, 6)


def running_seconds(info: Any, now: float | None = None) -> float | None:
    """How long a ``JobInfo`` has run (or ran): the Hub's count, else from its timestamps."""
    durations = getattr(info, "durations", None)
    if durations is not None and durations.running_secs is not None:
        return float(durations.running_secs)
    if info.started_at is None:
        return None
    end = info.finished_at.timestamp() if info.finished_at else (now or time.time())
    return max(0.0, end - info.started_at.timestamp())


def job_state(info: Any, *, time_limit_s: float | None, price: float | None) -> JobState:
    """A :class:`JobState` from a ``JobInfo``; ``price`` is USD/hour of its flavor, if known."""
    running = running_seconds(info)
    status, reason, code = classify(info.status.stage, info.status.message, running, time_limit_s)
    # A job that started is billed at least its first minute (the Hub rounds seconds down).
    cost = None if price is None or running is None else billed_usd(price, max(running, 1.0))
    hardware = {"flavor": str(getattr(info.flavor, "value", info.flavor) or ""),
                "image": str(info.docker_image or info.space_id or ""), "url": info.url}
    return JobState(
        status=status, reason=reason, exit_code=code,
        started_at=info.started_at.timestamp() if info.started_at else None,
        finished_at=info.finished_at.timestamp() if info.finished_at else None,
        hardware={k: v for k, v in hardware.items() if v}, cost_usd=cost,
    )


class LogFollower:
    """Reads one running job's log stream in a daemon thread, so ``logs()`` never blocks.

    ``fetch_job_logs(follow=True)`` replays the log from the start, then streams new lines
    until the job ends, reconnecting (and skipping events it has seen) when the stream drops.
    """

    def __init__(self, api: Any, job_id: str, namespace: str) -> None:
        self.lines: list[str] = []
        self.error: Exception | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._args = {"job_id": job_id, "namespace": namespace, "follow": True}
        self._api = api
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"hf-logs-{job_id}")
        self.thread.start()

    def _run(self) -> None:
        try:
            for line in self._api.fetch_job_logs(**self._args):
                self.lines.append(line)
                if self._stop.is_set():
                    break
        except Exception as exc:  # reported by the backend's next logs() call
            self.error = exc
            log.warning("hf-jobs: log stream of %s failed: %s", self._args["job_id"], exc)
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()


class MetricsFollower:
    """Samples one running job's ``fetch_job_metrics`` stream (CPU, memory, GPUs) in a daemon
    thread. ``samples`` holds ``(seconds since the follower started, sample dict)``."""

    def __init__(self, api: Any, job_id: str, namespace: str) -> None:
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._args = {"job_id": job_id, "namespace": namespace, "follow": True}
        self._api = api
        self._start = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"hf-metrics-{job_id}")
        self.thread.start()

    def _run(self) -> None:
        try:
            for sample in self._api.fetch_job_metrics(**self._args):
                if isinstance(sample, dict):
                    self.samples.append((time.monotonic() - self._start, sample))
                if self._stop.is_set():
                    break
        except Exception as exc:  # metrics are best effort
            self.error = exc
            log.info("hf-jobs: metrics stream of %s ended: %s", self._args["job_id"], exc)

    def stop(self) -> None:
        self._stop.set()


def gpu_summary(sample: dict[str, Any]) -> dict[str, float]:
    """``{"gpu_util": mean %, "gpu_mem_gb": sum}`` of one metrics sample; ``{}`` without GPUs."""
    gpus = [g for g in (sample.get("gpus") or {}).values() if isinstance(g, dict)]
    if not gpus:
        return {}
    return {"gpu_util": sum(float(g.get("utilization") or 0) for g in gpus) / len(gpus),
            "gpu_mem_gb": sum(float(g.get("memory_used_bytes") or 0) for g in gpus) / 1e9}

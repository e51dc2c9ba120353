"""The data model: small attrs records shared by the orchestrator and every plugin.

Records are frozen; a record that changes over time (an :class:`Experiment`) is replaced with
``attrs.evolve`` rather than mutated, so a value that was written to disk is never changed in
place. Every record converts to and from plain JSON-able dicts with :func:`to_dict` and the
class's ``from_dict``.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Mapping
from typing import Any

import attr
import attrs


def _now() -> float:
    return time.time()


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The last five are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OOM = "oom"
    PREEMPTED = "preempted"
    UNKNOWN = "unknown"
    LOST = "lost"  # the backend no longer knows the job (confirmed): it will never report again

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMEOUT,
        JobStatus.OOM,
        JobStatus.PREEMPTED,
        JobStatus.LOST,
    }
)


class ExperimentStatus(enum.StrEnum):
    """An experiment's stage in the lab, from proposal to verdict."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    STARTED = "started"
    FINISHED = "finished"  # ran to completion and was scored
    FAILED = "failed"  # crashed, timed out, ran out of memory, or could not be scored
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # stopped early by the Reporter
    REJECTED = "rejected"  # never ran: duplicate, stale, invalid patch, over budget


class Direction(enum.StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a < b if self is Direction.MINIMIZE else a > b

    def improvement(self, candidate: float, base: float) -> float:
        """How much better ``candidate`` is than ``base``; positive means better."""
        return base - candidate if self is Direction.MINIMIZE else candidate - base


@attrs.frozen
class Hypothesis:
    """An idea to test: one change to the editable files, and why.

    ``changes`` maps knob names to their proposed values when the idea is a knob change (the
    knob explorer); ``edits`` holds search/replace edits when the idea is a code change (LLM).
    """

    id: str
    title: str
    rationale: str = ""
    expected_effect: str = ""
    risk: str = ""
    citation: str | None = None
    source: str = "knob"  # "knob", "llm", "user", "baseline"
    changes: Mapping[str, Any] = attrs.field(factory=dict)
    edits: tuple[Mapping[str, str], ...] = ()
    conversation_id: str | None = None
    created_at: float = attrs.field(factory=_now)
    #: What this one experiment asks of the backend over the lab's defaults (``flavor``,
    #: ``gpus``, ``memory_gb``, ``cpus``): becomes ``JobSpec.resources`` (``autolab try --flavor``).
    resources: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hypothesis:
        d = dict(d)
        d["edits"] = tuple(d.get("edits", ()))
        return cls(**d)


@attrs.frozen
class Paper:
    """A paper or note a Researcher can read."""

    id: str
    title: str
    summary: str = ""
    url: str | None = None
    authors: tuple[str, ...] = ()
    published: str | None = None  # ISO date
    source: str = ""
    keywords: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Paper:
        d = dict(d)
        d["authors"] = tuple(d.get("authors", ()))
        d["keywords"] = tuple(d.get("keywords", ()))
        return cls(**d)


@attrs.frozen
class MetricPoint:
    """One value of one metric of one experiment at one step."""

    experiment_id: str
    step: int
    name: str
    value: float
    wall_time: float = attrs.field(factory=_now)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricPoint:
        return cls(**d)


@attrs.frozen
class JobSpec:
    """What a backend must run: a command in a checkout, with an environment and limits.

    ``workdir`` is the experiment's own checkout. Backends that run elsewhere (a cloud job)
    deliver the commit named by ``commit`` instead.

    ``resources`` holds this one experiment's backend-neutral requests, on top of the
    backend's options from ``autolab.toml``: ``flavor`` (a machine type, e.g. ``"a10g-small"``),
    ``gpus`` (a count), ``cpus``, ``memory_gb``. A backend that can honour a key does (and
    says which in its docs); one that cannot ignores it, so an experiment never fails only for
    asking. Unknown keys are ignored.
    """

    experiment_id: str
    command: tuple[str, ...]
    workdir: str
    env: Mapping[str, str] = attrs.field(factory=dict)
    time_limit_s: float | None = None
    commit: str | None = None
    branch: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict)
    resources: Mapping[str, Any] = attrs.field(factory=dict)
    #: Bytes for the command's stdin (the run's result key): handed over a pipe by backends
    #: that can (``JobBackend.takes_stdin``), never written to a file, a record or a handle.
    stdin: bytes | None = attrs.field(default=None, repr=False, eq=False,
                                      metadata={"secret": True})
    #: pip requirements (``[run] requirements``) for a backend that builds the job's Python
    #: environment itself (HF Jobs); backends that run in the lab's environment ignore them.
    requirements: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobSpec:
        d = dict(d)
        d["command"] = tuple(d["command"])
        d.pop("stdin", None)
        d["requirements"] = tuple(d.get("requirements", ()))
        return cls(**d)


@attrs.frozen
class JobHandle:
    """A submitted job. ``job_id`` is what ``JobBackend.reattach`` takes back after a restart.

    ``data`` holds whatever else the backend needs to find the job again (paths, a namespace);
    it must be JSON-able, because handles are written to the lab's state directory.
    """

    backend: str
    job_id: str
    experiment_id: str
    submitted_at: float = attrs.field(factory=_now)
    data: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobHandle:
        return cls(**d)


@attrs.frozen
class JobState:
    """A job's state as a backend last saw it. ``reason`` explains a failure in words."""

    status: JobStatus
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    hardware: Mapping[str, str] = attrs.field(factory=dict)
    cost_usd: float | None = None  # what the job cost so far, where the backend charges money
    slot: str | None = None  # the worker slot or node the job actually runs on, once known

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobState:
        d = dict(d)
        d["status"] = JobStatus(d["status"])
        return cls(**d)


@attrs.frozen
class LogChunk:
    """New log text since a cursor, and the cursor to pass next time."""

    text: str
    cursor: int


@attrs.frozen
class Result:
    """The decisive outcome of one run, as produced by the lab's protected evaluation code.

    ``trusted`` is False when the number was read from the patched program's own output
    (``metric.source = "pattern"``) rather than computed by the protected evaluation.
    """

    metric: str
    value: float
    seed: int = 0
    train_seconds: float | None = None
    eval_hash: str | None = None
    trusted: bool = True
    extra: Mapping[str, float] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        return cls(**d)


@attrs.frozen
class StatusEvent:
    status: ExperimentStatus
    at: float
    note: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StatusEvent:
        d = dict(d)
        d["status"] = ExperimentStatus(d["status"])
        return cls(**d)


@attrs.frozen
class Experiment:
    """One run of one patch (or of ``main`` itself, for a baseline) with one seed.

    ``role`` is ``"candidate"`` for a new idea, ``"baseline"`` for a noise-calibration run of
    ``main`` and ``"confirm"`` for an extra seed of a candidate that looked like a win
    (``parent`` then names that candidate).
    """

    id: str
    hypothesis: Hypothesis
    base_commit: str
    branch: str
    commit: str | None = None
    patch: str = ""
    tree_hash: str | None = None
    code_hash: str | None = None  # hash of the code files (editable + protected) after the patch
    base_code: str | None = None  # hash of the same files on main at base_commit
    role: str = "candidate"
    parent: str | None = None
    seed: int = 0
    history: tuple[StatusEvent, ...] = ()
    handle: JobHandle | None = None
    slot: str | None = None
    hardware: Mapping[str, str] = attrs.field(factory=dict)
    eval_hash: str | None = None
    result: Result | None = None
    reason: str | None = None
    flags: tuple[str, ...] = ()
    attempts: int = 0
    cost_usd: float = 0.0
    # The gate's verdict on a candidate: its effect against main (positive = better) with
    # the uncertainty of that difference, over ``n_runs`` seeds.
    verdict: str | None = None
    effect: float | None = None
    effect_err: float | None = None
    n_runs: int = 0
    log_cursor: int = 0

    @property
    def base_key(self) -> str:
        """What the experiment was compared against: main's code hash, else its commit."""
        return self.base_code or self.base_commit

    @property
    def status(self) -> ExperimentStatus:
        return self.history[-1].status if self.history else ExperimentStatus.QUEUED

    def at(self, status: ExperimentStatus) -> float | None:
        """When the experiment first reached ``status``, or None."""
        for event in self.history:
            if event.status is status:
                return event.at
        return None

    def with_status(
        self, status: ExperimentStatus, note: str | None = None, at: float | None = None
    ) -> Experiment:
        event = StatusEvent(status, _now() if at is None else at, note)
        return attrs.evolve(self, history=(*self.history, event))

    @property
    def done(self) -> bool:
        return self.status in {
            ExperimentStatus.FINISHED,
            ExperimentStatus.FAILED,
            ExperimentStatus.CANCELLED,
            ExperimentStatus.PRUNED,
            ExperimentStatus.REJECTED,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Experiment:
        d = dict(d)
        d.pop("nonce", None)  # older records kept the run's result nonce; it is gone
        d["hypothesis"] = Hypothesis.from_dict(d["hypothesis"])
        d["history"] = tuple(StatusEvent.from_dict(e) for e in d.get("history", ()))
        d["flags"] = tuple(d.get("flags", ()))
        if d.get("handle") is not None:
            d["handle"] = JobHandle.from_dict(d["handle"])
        if d.get("result") is not None:
            d["result"] = Result.from_dict(d["result"])
        return cls(**d)


def to_dict(record: Any) -> dict[str, Any]:
    """A JSON-able dict of any record above (enums become their values, tuples lists)."""

    def convert(_inst: Any, _field: Any, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        return value

    result: dict[str, Any] = attr.asdict(
        record, value_serializer=convert, retain_collection_types=False, filter=not_secret,
    )
    return result


def not_secret(attribute: Any, _value: Any) -> bool:
    """``attrs.asdict`` filter that leaves out fields marked secret (``JobSpec.stdin``)."""
    return not attribute.metadata.get("secret", False)


_DIGITS = re.compile(r"(\d+)")


def id_key(experiment_id: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders the numbers inside experiment ids numerically (``0042`` < ``9999``
    < ``10000``; ``e00042`` < ``e10000``)."""
    if experiment_id.isdigit():  # the lab's own ids
        return ((0, int(experiment_id)),)
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in _DIGITS.split(experiment_id) if part)

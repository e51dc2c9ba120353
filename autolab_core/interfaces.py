"""The four interfaces a plugin implements: JobBackend, LLM, PaperSource and MetricStore.

A plugin class is constructed as ``cls(options, context)``: ``options`` is the plugin's own
table from ``autolab.toml`` (e.g. ``[backend.slurm]``), already a plain dict, and ``context``
tells it where the lab lives. A plugin declares its options as an attrs class in
``options_class``; ``Plugin.__init__`` validates the table once (unknown keys, wrong types,
validators) and stores the instance as ``self.opts``, raising
:class:`~autolab_core.errors.ConfigError` that names the table and the bad key.

Heavy libraries (torch, submitit, huggingface_hub, trackio) are imported inside methods, never
at module level, so that ``autolab --help`` and ``autolab plugins`` stay fast.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from autolab_core.config import parse_options
from autolab_core.models import JobHandle, JobSpec, JobState, LogChunk, MetricPoint, Paper


@attrs.frozen
class PluginContext:
    """Where a plugin may keep its files.

    ``lab_root`` is the lab's git work tree; ``state_dir`` is the lab's private state directory
    (``<lab>/.autolab``), which survives restarts and is never committed. A plugin writes under
    ``plugin_dir(<its name>)``, i.e. ``state_dir / "plugins" / <its name>``.
    """

    lab_root: Path
    state_dir: Path
    lab_name: str = "lab"

    def plugin_dir(self, name: str) -> Path:
        path = self.state_dir / "plugins" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class Plugin(abc.ABC):
    """What all four kinds share: a registry name, a one-line description, and availability.

    Options: set ``options_class`` to an attrs class (typed fields with defaults and
    validators, see :mod:`autolab_core.validators`) and ``self.opts`` is an instance of it,
    validated once here. Without ``options_class`` (the older style) ``self.opts`` is None
    and the subclass validates ``self.options`` itself, e.g. with
    :func:`autolab_core.config.parse_options`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The attrs class of this plugin's ``autolab.toml`` table; None: no validation here.
    options_class: ClassVar[type[Any] | None] = None
    #: The first part of the table's name in error messages (``backend`` in ``[backend.x]``).
    section: ClassVar[str] = "plugin"

    opts: Any

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.options = dict(options or {})
        self.context = context
        if self.options_class is not None:
            self.opts = parse_options(self.options_class, self.options, self.options_table())
        elif not hasattr(self, "opts"):  # an older plugin may have set it before super()
            self.opts = None

    @classmethod
    def options_table(cls) -> str:
        """The table's name in ``autolab.toml``, e.g. ``backend.local``."""
        return f"{cls.section}.{getattr(cls, 'name', cls.__name__)}"

    @classmethod
    def available(cls) -> str | None:
        """None when the plugin can run here; otherwise why not, naming the fix.

        Example: ``"huggingface_hub is not installed: pip install 'autolab-ml[hf]'"``. It must be
        cheap and must not raise. Instance-level checks (a cluster that answers, a token that is
        set) go in :meth:`check`.
        """
        return None

    def check(self) -> str | None:
        """Like :meth:`available`, but with this instance's options (may touch the network)."""
        return self.available()

    def close(self) -> None:  # noqa: B027 - optional hook with a sensible default
        """Release resources. The orchestrator calls it once, when it stops."""


class JobBackend(Plugin):
    """Runs jobs somewhere: local processes, a SLURM cluster, a cloud service.

    The orchestrator calls these methods from one thread. None of them may block for long:
    ``submit`` returns as soon as the job is queued, and ``poll`` answers for many jobs in one
    round trip. A backend must let a restarted orchestrator take over the jobs a previous one
    submitted (``reattach`` and ``find``), so that no experiment is ever run twice.

    Run ``autolab_core.testing.JobBackendContract`` against your backend to check all of this.
    """

    section = "backend"

    #: How many jobs this backend runs at once, when it decides that itself (local slots).
    #: None lets the orchestrator use its ``--workers`` setting.
    capacity: int | None = None

    #: True when jobs run on the machine that runs ``autolab run`` (local processes). Only
    #: then may the orchestrator run a candidate's code itself (a smoke run before queuing);
    #: for a cluster or cloud backend it runs only checks that do not execute the patch.
    runs_on_this_machine: ClassVar[bool] = False

    #: True when ``submit`` accepts more jobs than can run at once and starts them as room
    #: frees up (a queue of its own: local slots, SLURM, HF Jobs). The orchestrator then may
    #: hand it a job ahead of a free slot.
    queues: ClassVar[bool] = False

    #: True when the backend hands ``JobSpec.stdin`` to the command's stdin over a pipe and
    #: writes it nowhere. Otherwise the orchestrator passes the run's result key in the
    #: job's environment (``AUTOLAB_RESULT_KEY``, treated as a secret), which is weaker.
    takes_stdin: ClassVar[bool] = False

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> JobHandle:
        """Queue ``spec`` and return at once with a handle whose ``job_id`` is stable."""

    @abc.abstractmethod
    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        """The current state of each handle, keyed by ``job_id``, in one batch."""

    @abc.abstractmethod
    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        """Output (stdout and stderr) written after cursor ``since``; pass back ``cursor``."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job, with everything it started. Cancelling a finished job is a no-op."""

    @abc.abstractmethod
    def reattach(self, job_id: str) -> JobHandle | None:
        """A handle for a job submitted earlier (perhaps by another process), or None."""

    def find(self, experiment_id: str) -> JobHandle | None:
        """The job already submitted for ``experiment_id``, if the backend can tell.

        Used after a crash between submitting and recording the handle. Backends with job
        labels (HF Jobs) or job names (SLURM) should implement it.
        """
        return None

    def estimate_cost(self, spec: JobSpec) -> float | None:
        """What running ``spec`` to its time limit would cost in USD, or None if free.

        The orchestrator refuses to submit a job whose estimate exceeds the money left in
        ``[budget] usd``; the actual cost comes back in ``JobState.cost_usd``.
        """
        return None

    def slot_of(self, handle: JobHandle) -> str:
        """The worker slot or node the job ran on, for the Gantt chart.

        Backends that know it report it in ``JobState.slot`` too, which callers prefer.
        """
        return str(handle.data.get("slot", self.name))

    # -- optional capabilities: the defaults suit a backend without them ---------------------
    def submit_many(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Queue several jobs at once (the loop hands over every job ready in one turn).

        A backend that can batch them (a SLURM job array) overrides it; the default submits
        them one by one. Returns one handle per spec, in order.
        """
        return [self.submit(spec) for spec in specs]

    def cleanup(self) -> list[str]:
        """Remove the files of jobs that ended longer ago than the backend keeps them.

        Called at startup and about hourly. Returns the experiment ids cleaned up.
        """
        return []

    def disk_usage(self) -> int | None:
        """Bytes this backend keeps on this machine (job folders), or None if it keeps none."""
        return None

    def system_metrics(self, handle: JobHandle) -> list[MetricPoint]:
        """Hardware metrics of the job (GPU use and memory) the backend measured, if any.

        Points named ``system/...``; the loop appends them to the metric store with the
        job's own metrics. Return only points not returned before.
        """
        return []


@attrs.frozen
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@attrs.frozen
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@attrs.frozen
class Completion:
    """An LLM's answer: the text, the parsed JSON when a schema was given, and usage."""

    text: str
    data: Any = None
    usage: Usage = Usage()
    model: str = ""
    raw: Mapping[str, Any] = attrs.field(factory=dict)


class LLM(Plugin):
    """A chat model.

    ``complete`` sends ``messages`` and returns a :class:`Completion`. With ``schema`` (a JSON
    schema) the provider asks the server for structured output where it can, and the answer's
    ``data`` is the parsed JSON; validation against the schema and retries with the error fed
    back are the provider's job. Raise :class:`~autolab_core.errors.LLMError` naming the
    provider, model and HTTP status on failure.
    """

    section = "llm"

    @abc.abstractmethod
    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Answer ``messages``."""


class PaperSource(Plugin):
    """Somewhere to find papers: HF Papers, arXiv, a folder of notes."""

    section = "papers"

    @abc.abstractmethod
    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        """Papers matching ``query``, newest first; ``since`` is an ISO date."""

    @abc.abstractmethod
    def get(self, paper_id: str) -> Paper | None:
        """One paper with its full summary, or None."""


class MetricStore(Plugin):
    """Where every metric point of every experiment lives.

    The orchestrator is the single writer: it calls ``append`` from one process, so a store
    need not handle concurrent writers, but it must never lose a point it acknowledged, and a
    crash must not corrupt what was written before it.
    """

    section = "metrics"

    @abc.abstractmethod
    def append(self, points: Sequence[MetricPoint]) -> None:
        """Add points. They may be buffered until ``flush`` or ``finish``."""

    def flush(self) -> None:
        """Make appended points durable."""

    def start(self, experiment_id: str, config: Mapping[str, Any] | None = None,
              group: str | None = None) -> None:
        """A run begins: its ``config`` (title, role, seed, knobs) and ``group`` (the lab).

        Stores that keep runs with a config (Trackio) override it; the default does nothing.
        """

    @abc.abstractmethod
    def finish(self, experiment_id: str) -> None:
        """No more points will come for ``experiment_id``; make them durable."""

    @abc.abstractmethod
    def query(
        self,
        experiment_ids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> Any:
        """A ``pyarrow.Table`` with columns experiment_id, step, name, value, wall_time."""

    @abc.abstractmethod
    def export_parquet(self, path: Path) -> Path:
        """Write every point to one Parquet file (or dataset directory) at ``path``."""


PLUGIN_KINDS: dict[str, type[Plugin]] = {
    "backend": JobBackend,
    "llm": LLM,
    "paper_source": PaperSource,
    "metric_store": MetricStore,
}

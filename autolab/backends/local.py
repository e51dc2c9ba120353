"""The ``local`` backend: jobs run as processes on this machine, one per worker slot.

Each job is a directory run by a detached supervisor: :class:`autolab_core.jobdir.JobDirectory`
describes the design (files, slots, the pending queue, time limits, cancellation, takeover
after a restart). This module adds the options and the slots: ``local-0 .. local-<workers-1>``,
each with its BLAS/OpenMP thread count and, with ``gpus``, its own ``CUDA_VISIBLE_DEVICES``.
``close`` leaves jobs running for the next orchestrator; ``cancel_all`` stops them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from autolab_core import hookimpl
from autolab_core.dirbackend import DirectoryBackend
from autolab_core.errors import ConfigError
from autolab_core.interfaces import PluginContext
from autolab_core.jobdir import JobDirectory, Slot
from autolab_core.validators import duration, positive


@attrs.frozen
class LocalOptions:
    """``[backend.local]`` in ``autolab.toml``.

    ``workers`` slots run at once (default 1, or one per entry of ``gpus``); each job gets
    ``threads_per_worker`` BLAS/OpenMP threads and, when ``gpus`` is set, one GPU id of its
    own through ``CUDA_VISIBLE_DEVICES``. ``kill_grace_s`` is the time between SIGTERM and
    SIGKILL when a job is cancelled or over its time limit.
    """

    workers: int | None = attrs.field(default=None, validator=positive)
    threads_per_worker: int = attrs.field(default=1, validator=positive)
    gpus: list[int | str] = attrs.field(factory=list)
    kill_grace_s: float = duration(5.0)


class LocalBackend(DirectoryBackend):
    """Runs jobs as local processes, ``workers`` at a time. See the module docstring."""

    name = "local"
    options_class = LocalOptions
    runs_on_this_machine = True
    queues = True
    takes_stdin = True
    description = "run jobs as processes on this machine, one per worker slot"
    opts: LocalOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        gpus = [str(g) for g in self.opts.gpus]
        if len(set(gpus)) != len(gpus):
            raise ConfigError(f"[backend.local] gpus = {self.opts.gpus!r} lists a GPU twice")
        self.workers = self.opts.workers or max(1, len(gpus))
        if gpus and len(gpus) < self.workers:
            raise ConfigError(
                f"[backend.local] workers = {self.workers} but gpus lists {len(gpus)} GPU(s); "
                "list one GPU id per worker slot, or lower workers"
            )
        self.capacity = self.workers
        self.gpus = gpus
        slots = [Slot(f"local-{i}", self.slot_env(i), gpus[i] if gpus else None)
                 for i in range(self.workers)]
        self.jobs = JobDirectory(context.plugin_dir("local"), self.name, slots=slots,
                                 kill_grace_s=self.opts.kill_grace_s)
        self.root, self.jobs_dir = self.jobs.root, self.jobs.jobs_dir

    def slot_names(self) -> list[str]:
        return [s.name for s in self.jobs.slots]

    def slot_env(self, index: int) -> dict[str, str]:
        """The environment that pins a job to slot ``index``."""
        threads = str(self.opts.threads_per_worker)
        env = {
            "AUTOLAB_SLOT": f"local-{index}",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[index]
        return env


@hookimpl
def autolab_register_backends(register: Any) -> None:
    register(LocalBackend)

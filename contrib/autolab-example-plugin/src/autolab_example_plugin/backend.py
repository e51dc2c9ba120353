"""``example-subprocess``: a complete :class:`~autolab_core.JobBackend` on the core's helper.

:class:`autolab_core.jobdir.JobDirectory` does the work: each job gets a directory with its
spec, log, pid and exit record, run by a detached supervisor that survives the orchestrator,
enforces the time limit and stops the whole process group on cancel. Because the state lives
in files, any instance, in any process, can ``poll``, read ``logs``, ``cancel`` and
``reattach`` a job that another instance submitted. This class only adds its options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from autolab_core.dirbackend import DirectoryBackend
from autolab_core.interfaces import PluginContext
from autolab_core.jobdir import JobDirectory, Slot
from autolab_core.validators import duration, positive


@attrs.frozen
class SubprocessOptions:
    """``[backend.example-subprocess]`` options."""

    #: Where job directories go; relative paths are relative to the lab root.
    #: Default: ``<lab>/.autolab/plugins/example-subprocess``.
    jobs_dir: str | None = None
    #: Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    kill_grace: float = duration(5.0)
    #: How many jobs to run at once (None: no limit here, the orchestrator's ``--workers``).
    max_parallel: int | None = attrs.field(default=None, validator=positive)


class SubprocessBackend(DirectoryBackend):
    """Runs each job as a local process under a detached supervisor; survives restarts."""

    name = "example-subprocess"
    description = "Local processes under a detached supervisor (the autolab example plugin)."
    options_class = SubprocessOptions
    opts: SubprocessOptions
    runs_on_this_machine = True
    queues = False  # each submit starts its process at once

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        root = (context.plugin_dir(self.name) if self.opts.jobs_dir is None
                else context.lab_root / self.opts.jobs_dir)
        slots = [Slot(f"{self.name}-{i}") for i in range(self.opts.max_parallel or 0)]
        self.jobs = JobDirectory(root, self.name, slots=slots, kill_grace_s=self.opts.kill_grace)
        self.capacity = self.opts.max_parallel

    @classmethod
    def available(cls) -> str | None:
        if os.name != "posix":
            return "example-subprocess needs process groups (Linux or macOS); use `local`"
        return None

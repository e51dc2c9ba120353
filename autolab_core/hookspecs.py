"""Hook specifications. Plugins implement these with ``@autolab_core.hookimpl``.

The ``autolab_register_*`` hooks only register classes; what a class does is defined by the
interfaces in :mod:`autolab_core.interfaces`. Example::

    from autolab_core import hookimpl

    @hookimpl
    def autolab_register_backends(register):
        register(MyClusterBackend)

The lifecycle hooks are called by the orchestrator for cross-cutting plugins (notifiers,
trackers). Their return values are ignored, and an exception in one is logged, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "autolab"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type[Any]], None]


@hookspec
def autolab_register_backends(register: Register) -> None:
    """Register ``JobBackend`` subclasses: call ``register(cls)`` for each."""


@hookspec
def autolab_register_llms(register: Register) -> None:
    """Register ``LLM`` subclasses."""


@hookspec
def autolab_register_paper_sources(register: Register) -> None:
    """Register ``PaperSource`` subclasses."""


@hookspec
def autolab_register_metric_stores(register: Register) -> None:
    """Register ``MetricStore`` subclasses."""


@hookspec
def autolab_experiment_finished(lab: Any, experiment: Any) -> None:
    """An experiment reached a final status (finished, failed, cancelled, pruned, rejected)."""


@hookspec
def autolab_change_promoted(lab: Any, experiment: Any, commit: str, improvement: float) -> None:
    """A candidate was promoted to ``main`` as ``commit``, improving the metric by this much."""


@hookspec
def autolab_anomaly(lab: Any, experiment: Any, flag: str, reason: str) -> None:
    """The Reporter flagged an anomaly on an experiment."""

"""Typed calls of the lifecycle hooks in :mod:`autolab_core.hookspecs`.

The run loop calls ``hooks.experiment_finished(exp)`` instead of naming a hook by string with
untyped keyword arguments, so a renamed hook or a missing argument is a type error, not a
silent no-op. Without a plugin manager every call does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autolab_core.lab import Lab
    from autolab_core.models import Experiment
    from autolab_core.plugins import PluginManager
    from autolab_core.vocab import Flag


class Hooks:
    """One method per lifecycle hook, each bound to ``lab``."""

    def __init__(self, plugins: PluginManager | None, lab: Lab) -> None:
        self.plugins = plugins
        self.lab = lab

    def experiment_finished(self, experiment: Experiment) -> None:
        """``autolab_experiment_finished``: ``experiment`` reached a final status."""
        if self.plugins is not None:
            self.plugins.notify("autolab_experiment_finished", lab=self.lab, experiment=experiment)

    def change_promoted(self, experiment: Experiment, commit: str, improvement: float) -> None:
        """``autolab_change_promoted``: ``experiment`` became ``main`` as ``commit``."""
        if self.plugins is not None:
            self.plugins.notify("autolab_change_promoted", lab=self.lab, experiment=experiment,
                                commit=commit, improvement=improvement)

    def anomaly(self, experiment: Experiment, flag: Flag) -> None:
        """``autolab_anomaly``: the Reporter raised ``flag`` on ``experiment``."""
        if self.plugins is not None:
            self.plugins.notify("autolab_anomaly", lab=self.lab, experiment=experiment,
                                flag=str(flag.kind), reason=str(flag))

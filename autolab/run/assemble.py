"""Build a run from a lab's ``autolab.toml``: backend, metric store, roles, and the loop.

Every part comes from the plugin registry by the name the config gives, so a third-party
backend, LLM, paper source or metric store is used exactly like a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from rich.markup import escape

from autolab.agents.base import PatchWriter, Proposer
from autolab.agents.knobs import KnobExplorer, RandomSearch
from autolab.lab_recovery import recover_state
from autolab.run.jobs import Jobs
from autolab.run.ledger import open_ledger
from autolab.run.loop import RunLoop, RunOptions
from autolab.run.proposals import Roles
from autolab_core.errors import ConfigError, PluginError
from autolab_core.interfaces import JobBackend, Plugin
from autolab_core.lab import Lab
from autolab_core.plugins import PluginManager, get_plugin_manager, lab_context, make_plugin, make_store

Say = Callable[[str], None]


def _takes_workers(cls: type[Plugin]) -> bool:
    """Whether ``--workers`` goes into the backend's options: a backend that runs jobs on this
    machine and has a ``workers`` option (its slots). Others get it as the loop's concurrency."""
    options_class = getattr(cls, "options_class", None)
    if not (issubclass(cls, JobBackend) and cls.runs_on_this_machine):
        return False
    return isinstance(options_class, type) and attrs.has(options_class) and (
        "workers" in attrs.fields_dict(options_class))


def make_backend(lab: Lab, pm: PluginManager, workers: int | None = None,
                 name: str | None = None) -> JobBackend:
    """The configured backend; ``workers`` (from the command line) overrides its slots."""
    name = name or lab.config.backend
    options = lab.config.backend_table(name)
    if workers is not None and _takes_workers(pm.get("backend", name)):
        options["workers"] = workers
    backend: JobBackend = make_plugin(pm, "backend", name, options, lab_context(lab))
    return backend


def make_roles(lab: Lab, pm: PluginManager, strategy: str | None = None
               ) -> tuple[Proposer, PatchWriter, tuple[Proposer, PatchWriter] | None]:
    """The Researcher and Worker: LLM roles when an LLM is configured, else the knob explorer."""
    cfg = lab.config
    strategy = strategy or cfg.search.strategy
    knob_args: dict[str, Any] = {
        "editable": cfg.files.editable,
        "exclude": cfg.search.exclude,
        "focus": cfg.search.focus,
        "seed": cfg.search.seed,
        "command": cfg.run.argv(),  # knobs the command fixes are never proposed
    }
    knobs = KnobExplorer(**knob_args)
    if strategy == "random":
        rnd = RandomSearch(**knob_args)
        return rnd, rnd, None
    if strategy == "knob" or (strategy == "auto" and cfg.llm is None):
        return knobs, knobs, None
    if cfg.llm is None:
        raise ConfigError("[search] strategy = 'llm' needs an [llm] table naming a provider")
    from autolab.agents.llm_roles import build_llm_roles

    researcher, worker = build_llm_roles(lab, pm, lab_context(lab))
    return researcher, worker, (knobs, knobs)


def build_loop(
    lab: Lab,
    options: RunOptions,
    say: Say = print,
    pm: PluginManager | None = None,
    strategy: str | None = None,
) -> RunLoop:
    """Everything ``autolab run`` needs, from the lab's config and ``options``."""
    for note in recover_state(lab):  # the user may have deleted .autolab/: never a traceback
        say("note: " + escape(note))
    pm = pm or get_plugin_manager()
    backend = make_backend(lab, pm, workers=options.workers)
    problem = backend.check()
    if problem:
        raise PluginError(f"backend {backend.name!r} cannot run: {problem}")
    store = make_store(lab, pm)
    proposer, writer, fallback = make_roles(lab, pm, strategy)
    from autolab.reporting.review import Reporter

    ledger = open_ledger(lab, say, pm)
    jobs = Jobs(ledger, backend, store, reporter=Reporter.from_config(lab.config, store))
    return RunLoop(ledger, jobs, Roles(proposer, writer, fallback), options)

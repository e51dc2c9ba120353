"""Assemble an :class:`~autolab.orchestrator.Orchestrator` from a lab's ``autolab.toml``.

Every part comes from the plugin registry by the name the config gives, so a third-party
backend, LLM, paper source or metric store is used exactly like a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autolab.agents.base import PatchWriter, Proposer
from autolab.agents.knobs import KnobExplorer, RandomSearch
from autolab.orchestrator import Orchestrator, RunOptions
from autolab_core.errors import ConfigError, PluginError
from autolab_core.interfaces import JobBackend, MetricStore, PluginContext
from autolab_core.lab import Lab
from autolab_core.plugins import PluginManager, get_plugin_manager


def context_for(lab: Lab) -> PluginContext:
    return PluginContext(lab_root=lab.root, state_dir=lab.state_dir, lab_name=lab.config.name)


def make_plugin(pm: PluginManager, kind: str, name: str, options: dict[str, Any],
                context: PluginContext) -> Any:
    cls = pm.get(kind, name)
    reason = cls.available()
    if reason:
        raise PluginError(f"{kind.replace('_', ' ')} {name!r} cannot run here: {reason}")
    return cls(options, context)


def make_backend(lab: Lab, pm: PluginManager, workers: int | None = None,
                 name: str | None = None) -> JobBackend:
    name = name or lab.config.backend
    options = lab.config.backend_table(name)
    if name == "local" and workers is not None:
        options["workers"] = workers
    backend: JobBackend = make_plugin(pm, "backend", name, options, context_for(lab))
    return backend


def make_store(lab: Lab, pm: PluginManager) -> MetricStore:
    name = lab.config.metric_store
    store: MetricStore = make_plugin(
        pm, "metric_store", name, dict(lab.config.metric_store_options.get(name, {})),
        context_for(lab),
    )
    return store


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

    researcher, worker = build_llm_roles(lab, pm, context_for(lab))
    return researcher, worker, (knobs, knobs)


def build_orchestrator(
    lab: Lab,
    options: RunOptions,
    say: Callable[[str], None] = print,
    pm: PluginManager | None = None,
    strategy: str | None = None,
) -> Orchestrator:
    pm = pm or get_plugin_manager()
    backend = make_backend(lab, pm, workers=options.workers)
    problem = backend.check()
    if problem:
        raise PluginError(f"backend {backend.name!r} cannot run: {problem}")
    store = make_store(lab, pm)
    proposer, writer, fallback = make_roles(lab, pm, strategy)
    from autolab.reporting.review import Reporter

    return Orchestrator(
        lab, backend, store, proposer, writer, options, plugins=pm, say=say,
        reporter=Reporter.from_config(lab.config, store), fallback=fallback,
    )

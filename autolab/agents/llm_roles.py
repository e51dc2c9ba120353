"""Build the LLM Researcher and Worker from a lab's ``autolab.toml``.

::

    [llm]
    name = "openai-compatible"
    [llm.openai-compatible]          # the provider's options
    base_url = "http://127.0.0.1:8080/v1"
    model = "qwen2.5-coder-7b"
    [llm.researcher]                 # optional role options
    paper_query = "small language model training"
    [llm.worker]
    constrain_lines = true           # for weak models: search text = one of the file's lines
    [papers]
    sources = ["local", "arxiv"]
    [budget]
    llm_usd = 5.0

The provider is wrapped in :class:`~autolab.llms.budget.BudgetedLLM`; prompts and answers go
to ``<state_dir>/conversations/``; a lab's ``skills/<role>/SKILL.md`` overrides the prompts.
"""

from __future__ import annotations

from typing import Any

import attrs

from autolab.agents.edits import DEFAULT_LIMITS, PatchLimits
from autolab.agents.llm_researcher import LLMResearcher
from autolab.agents.llm_worker import LLMWorker
from autolab.agents.skills import load_skill
from autolab.llms.budget import BudgetedLLM
from autolab_core.config import Config, parse_options
from autolab_core.errors import ConfigError, PluginError
from autolab_core.interfaces import PaperSource, PluginContext
from autolab_core.validators import positive

ROLE_TABLES = ("researcher", "worker")


@attrs.frozen
class ResearcherOptions:
    paper_query: str = ""
    papers_per_source: int = 5


@attrs.frozen
class WorkerOptions:
    constrain_lines: bool = False
    max_attempts: int = 3
    max_changed_lines: int = attrs.field(default=DEFAULT_LIMITS.max_changed_lines,
                                         validator=positive)
    max_edits: int = attrs.field(default=DEFAULT_LIMITS.max_edits, validator=positive)
    max_tokens: int | None = None

    def limits(self) -> PatchLimits:
        return PatchLimits(self.max_changed_lines, self.max_edits)


def patch_limits(config: Config) -> PatchLimits:
    """The patch limits of a lab (``[llm.worker] max_changed_lines, max_edits``): what every
    caller of :func:`autolab.agents.edits.validate_patch` passes, LLM or not."""
    table = config.llm_options.get("worker")
    return parse_options(WorkerOptions, table, "llm.worker").limits()


def _plugin(pm: Any, kind: str, name: str, options: dict[str, Any], context: PluginContext) -> Any:
    cls = pm.get(kind, name)
    reason = cls.available()
    if reason:
        raise PluginError(f"{kind.replace('_', ' ')} {name!r} cannot run here: {reason}")
    return cls(options, context)


def build_llm_roles(lab: Any, pm: Any, context: PluginContext) -> tuple[LLMResearcher, LLMWorker]:
    """The Researcher and Worker for ``lab`` (an ``autolab_core.lab.Lab``)."""
    cfg = lab.config
    if cfg.llm is None:
        raise ConfigError("no [llm] table: set [llm] name = \"openai-compatible\" (see docs/llm.md)")
    if cfg.llm in ROLE_TABLES:
        raise ConfigError(f"[llm] name = {cfg.llm!r} is a role table, not a provider")
    llm = _plugin(pm, "llm", cfg.llm, dict(cfg.llm_options.get(cfg.llm, {})), context)
    budgeted = BudgetedLLM(llm, cfg.budget.llm_usd, context.state_dir)
    papers: list[PaperSource] = [
        _plugin(pm, "paper_source", name, dict(cfg.paper_options.get(name, {})), context)
        for name in cfg.paper_sources
    ]
    r_opts = parse_options(ResearcherOptions, cfg.llm_options.get("researcher"), "llm.researcher")
    w_opts = parse_options(WorkerOptions, cfg.llm_options.get("worker"), "llm.worker")
    conversations = context.state_dir / "conversations"
    researcher = LLMResearcher(
        budgeted, papers, context.state_dir, load_skill("researcher", context.lab_root),
        conversations_dir=conversations, paper_query=r_opts.paper_query,
        papers_per_source=r_opts.papers_per_source,
    )
    worker = LLMWorker(
        budgeted, cfg.files.editable, load_skill("worker", context.lab_root),
        protected=cfg.files.protected, conversations_dir=conversations,
        constrain_lines=w_opts.constrain_lines, max_attempts=w_opts.max_attempts,
        limits=w_opts.limits(),
        max_tokens=w_opts.max_tokens,
    )
    return researcher, worker

"""autolab_core: what an autolab plugin author depends on.

The interfaces (:class:`JobBackend`, :class:`LLM`, :class:`PaperSource`, :class:`MetricStore`),
the data model, the hookspecs and plugin manager, the lab's configuration and its state in git,
and the plugin SDK: options validation (``Plugin.options_class``, :mod:`autolab_core.validators`),
job directories run by a detached supervisor (:class:`JobDirectory`), atomic writes
(:func:`write_atomic`) and a chat-LLM base (:class:`ChatLLM`). A plugin imports from here.
This package never imports ``autolab`` (the application) nor any heavy library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562) so that the standard-library-only parts of the
# core (``autolab_core.runner``, ``autolab_core.metriclines``, ``autolab_core.hashing``) can
# run inside a job container that has neither attrs nor pluggy installed.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["AutolabError", "BackendError", "BudgetExceeded", "ConfigError", "LabError",
                     "LLMError", "PatchError", "PluginError"], "autolab_core.errors"),
    "hookimpl": "autolab_core.hookspecs",
    **dict.fromkeys(["LLM", "Completion", "JobBackend", "Message", "MetricStore", "PaperSource",
                     "Plugin", "PluginContext", "Usage"], "autolab_core.interfaces"),
    "write_atomic": "autolab_core.atomic",
    **dict.fromkeys(["parse_duration", "parse_options"], "autolab_core.config"),
    **dict.fromkeys(["JobDirectory", "Slot"], "autolab_core.jobdir"),
    "DirectoryBackend": "autolab_core.dirbackend",
    **dict.fromkeys(["ChatLLM", "CommonOptions", "RawAnswer"], "autolab_core.chat"),
    "HTTPChatLLM": "autolab_core.chat_http",
    **dict.fromkeys(["between", "duration", "non_negative", "positive"], "autolab_core.validators"),
    **dict.fromkeys(["Direction", "Experiment", "ExperimentStatus", "Hypothesis", "JobHandle",
                     "JobSpec", "JobState", "JobStatus", "LogChunk", "MetricPoint", "Paper",
                     "Result", "to_dict"], "autolab_core.models"),
}

__all__ = [
    "LLM",
    "AutolabError",
    "BackendError",
    "BudgetExceeded",
    "ChatLLM",
    "CommonOptions",
    "Completion",
    "ConfigError",
    "Direction",
    "DirectoryBackend",
    "Experiment",
    "ExperimentStatus",
    "HTTPChatLLM",
    "Hypothesis",
    "JobBackend",
    "JobDirectory",
    "JobHandle",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LLMError",
    "LabError",
    "LogChunk",
    "Message",
    "MetricPoint",
    "MetricStore",
    "Paper",
    "PaperSource",
    "PatchError",
    "Plugin",
    "PluginContext",
    "PluginError",
    "RawAnswer",
    "Result",
    "Slot",
    "Usage",
    "between",
    "duration",
    "hookimpl",
    "non_negative",
    "parse_duration",
    "parse_options",
    "positive",
    "to_dict",
    "write_atomic",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autolab_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from autolab_core.atomic import write_atomic
    from autolab_core.chat import ChatLLM, CommonOptions, RawAnswer
    from autolab_core.chat_http import HTTPChatLLM
    from autolab_core.config import parse_duration, parse_options
    from autolab_core.dirbackend import DirectoryBackend
    from autolab_core.errors import (
        AutolabError,
        BackendError,
        BudgetExceeded,
        ConfigError,
        LabError,
        LLMError,
        PatchError,
        PluginError,
    )
    from autolab_core.hookspecs import hookimpl
    from autolab_core.interfaces import (
        LLM,
        Completion,
        JobBackend,
        Message,
        MetricStore,
        PaperSource,
        Plugin,
        PluginContext,
        Usage,
    )
    from autolab_core.jobdir import JobDirectory, Slot
    from autolab_core.models import (
        Direction,
        Experiment,
        ExperimentStatus,
        Hypothesis,
        JobHandle,
        JobSpec,
        JobState,
        JobStatus,
        LogChunk,
        MetricPoint,
        Paper,
        Result,
        to_dict,
    )
    from autolab_core.validators import between, duration, non_negative, positive

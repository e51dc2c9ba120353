"""autolab_core: what an autolab plugin author depends on.

The interfaces (:class:`JobBackend`, :class:`LLM`, :class:`PaperSource`, :class:`MetricStore`),
the data model, the hookspecs and plugin manager, the lab's configuration and its state in git.
This package never imports ``autolab`` (the application) nor any heavy library.
"""

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

__all__ = [
    "LLM", "AutolabError", "BackendError", "BudgetExceeded", "Completion", "ConfigError",
    "Direction", "Experiment", "ExperimentStatus", "Hypothesis", "JobBackend", "JobHandle",
    "JobSpec", "JobState", "JobStatus", "LLMError", "LabError", "LogChunk", "Message",
    "MetricPoint", "MetricStore", "Paper", "PaperSource", "PatchError", "Plugin",
    "PluginContext", "PluginError", "Result", "Usage", "hookimpl", "to_dict",
]

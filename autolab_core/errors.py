"""Errors that carry a message a user can act on."""

from __future__ import annotations


class AutolabError(Exception):
    """Base class: the message names what went wrong and how to fix it."""


class ConfigError(AutolabError):
    """A bad ``autolab.toml`` key or value, or bad plugin options."""


class PluginError(AutolabError):
    """A plugin that failed to load, register or construct."""


class LabError(AutolabError):
    """A git or lab-state operation that cannot be done as asked."""


class PatchError(AutolabError):
    """A patch that does not apply, touches a protected file, or breaks the code."""


class BackendError(AutolabError):
    """A backend that cannot submit, poll or cancel."""


class LLMError(AutolabError):
    """An LLM call that failed after its retries; names provider, model and status."""


class BudgetExceeded(AutolabError):
    """A budget (money, LLM spend, experiments, time) would be overrun."""

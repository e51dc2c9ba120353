"""Registers the built-in LLM providers (entry point ``llms``)."""

from __future__ import annotations

from autolab.llms.anthropic import AnthropicLLM
from autolab.llms.hf_inference import HFInferenceLLM
from autolab.llms.openai_compatible import OpenAICompatibleLLM
from autolab_core.hookspecs import Register, hookimpl


@hookimpl
def autolab_register_llms(register: Register) -> None:
    register(OpenAICompatibleLLM)
    register(AnthropicLLM)
    register(HFInferenceLLM)

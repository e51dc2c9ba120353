"""LLM providers (``openai-compatible``, ``anthropic``, ``hf-inference``) and the LLM budget.

Provider modules import only httpx at module level; huggingface_hub is imported when used.
"""

from autolab.llms.budget import BudgetedLLM, LLMLedger
from autolab_core.chat import ChatLLM, ProviderError
from autolab_core.schema import extract_json, validate

__all__ = ["BudgetedLLM", "ChatLLM", "LLMLedger", "ProviderError", "extract_json", "validate"]

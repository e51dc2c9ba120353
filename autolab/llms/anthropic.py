"""``anthropic``: the Messages API over httpx.

The system prompt goes in the top-level ``system`` field. Structured output (``structured =
"tool"``, the default) forces a tool whose ``input_schema`` is the schema, so the answer
arrives as the tool call's input; servers that ignore tools (some local Anthropic-compatible
servers) still get the schema in the system prompt, and JSON in the text is accepted as a
fallback. ``structured = "prompt"`` uses the prompt alone. Answers are always validated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab_core.chat import SCHEMA_NAME, CommonOptions, RawAnswer, system_with_schema
from autolab_core.chat_http import HTTPChatLLM
from autolab_core.interfaces import Message, PluginContext


@attrs.frozen
class AnthropicOptions(CommonOptions):
    base_url: str = "https://api.anthropic.com"
    api_key_env: str | None = "ANTHROPIC_API_KEY"
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = attrs.field(factory=dict)
    structured: str = attrs.field(default="tool", metadata={"choices": ["tool", "prompt"]})


class AnthropicLLM(HTTPChatLLM):
    """Claude through the Messages API (``x-api-key`` and ``anthropic-version`` headers)."""

    name = "anthropic"
    description = "Anthropic Messages API (Claude), structured output through a forced tool"
    options_class = AnthropicOptions
    key_option = "api_key_env"
    key_hint = "your Anthropic API key"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.url = self.opts.base_url.rstrip("/") + "/v1/messages"

    def headers(self) -> dict[str, str]:
        return {"anthropic-version": self.opts.anthropic_version, **super().headers()}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def body(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None,
        max_tokens: int,
        temperature: float | None,
    ) -> dict[str, Any]:
        msgs = system_with_schema(messages, schema)
        system = "\n\n".join(m.content for m in msgs if m.role == "system")
        turns: list[dict[str, Any]] = []
        for m in msgs:
            if m.role == "system":
                continue
            if turns and turns[-1]["role"] == m.role:  # the API wants alternating turns
                turns[-1]["content"] += "\n\n" + m.content
            else:
                turns.append({"role": m.role, "content": m.content})
        body: dict[str, Any] = {"model": self.model, "messages": turns, "max_tokens": max_tokens}
        if system:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = temperature
        if schema is not None and self.opts.structured == "tool":
            body["tools"] = [
                {
                    "name": SCHEMA_NAME,
                    "description": "Give your answer as this tool's input.",
                    "input_schema": dict(schema),
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": SCHEMA_NAME}
        return body

    def parse(self, data: Mapping[str, Any]) -> RawAnswer:
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise self.error(f"answer has no content blocks: {str(data)[:300]}")
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        tool_input = next(
            (b.get("input") for b in blocks if b.get("type") == "tool_use"), None
        )
        usage = data.get("usage") or {}
        input_tokens = sum(
            int(usage.get(k) or 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return RawAnswer(
            text=text,
            data=tool_input,
            usage=self.usage_from(input_tokens, usage.get("output_tokens")),
            model=str(data.get("model") or self.model),
            raw=dict(data),
            truncated=data.get("stop_reason") == "max_tokens",
        )

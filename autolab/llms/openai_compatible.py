"""``openai-compatible``: any server speaking OpenAI's ``/chat/completions``.

One client for vLLM, llama.cpp's server, Ollama, TGI, OpenAI, OpenRouter and the HF router.
Structured output goes as ``response_format = {"type": "json_schema", ...}`` (``structured =
"json_schema"``), as ``{"type": "json_object"}`` for servers without schema support, or only
in the prompt (``"prompt"``); the answer is validated in every case. With ``strict = true``
(the default, for hosted APIs) the schema is sent without length limits, which strict modes
reject; ``strict = false`` sends it whole, so llama.cpp and vLLM also bound string lengths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab_core.chat import SCHEMA_NAME, CommonOptions, RawAnswer, system_with_schema
from autolab_core.chat_http import HTTPChatLLM
from autolab_core.errors import ConfigError
from autolab_core.interfaces import Message, PluginContext
from autolab_core.schema import portable_schema


@attrs.frozen
class OpenAIOptions(CommonOptions):
    base_url: str = ""
    api_key_env: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    structured: str = attrs.field(
        default="json_schema", metadata={"choices": ["json_schema", "json_object", "prompt"]}
    )
    strict: bool = True
    schema_in_prompt: bool = True


class OpenAICompatibleLLM(HTTPChatLLM):
    """Chat completions over HTTP; the key is read from the env var named by ``api_key_env``."""

    name = "openai-compatible"
    description = "Any OpenAI-compatible /chat/completions server (vLLM, llama.cpp, OpenAI, ...)"
    options_class = OpenAIOptions
    key_option = "api_key_env"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        if not self.opts.base_url:
            raise ConfigError(
                "[llm.openai-compatible] base_url is required, e.g. "
                "base_url = \"http://127.0.0.1:8000/v1\" or \"https://api.openai.com/v1\""
            )
        self.key_hint = f"the API key for {self.opts.base_url}"
        self.url = self.opts.base_url.rstrip("/") + "/chat/completions"

    def body(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None,
        max_tokens: int,
        temperature: float | None,
    ) -> dict[str, Any]:
        mode = self.opts.structured
        if schema is not None and (self.opts.schema_in_prompt or mode != "json_schema"):
            messages = system_with_schema(messages, schema)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
        }
        if temperature is not None:
            body["temperature"] = temperature
        if schema is not None and mode == "json_schema":
            sent = portable_schema(schema) if self.opts.strict else dict(schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": sent, "strict": self.opts.strict},
            }
        elif schema is not None and mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def parse(self, data: Mapping[str, Any]) -> RawAnswer:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise self.error(f"answer has no choices[0].message: {str(data)[:300]}") from None
        text = message.get("content") or ""
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        usage = data.get("usage") or {}
        return RawAnswer(
            text=text,
            usage=self.usage_from(
                usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("cost")
            ),
            model=str(data.get("model") or self.model),
            raw=dict(data),
            truncated=data["choices"][0].get("finish_reason") == "length",
        )

"""``hf-inference``: Hugging Face Inference Providers through ``InferenceClient.chat_completion``.

huggingface_hub is imported lazily. ``provider`` picks the inference provider ("auto" lets
the Hub choose); ``base_url`` sends the same requests to any OpenAI-compatible server instead
(a TGI or vLLM endpoint). The token is read from the env var named by ``token_env``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab_core.chat import (
    SCHEMA_NAME,
    ChatLLM,
    CommonOptions,
    HTTPFailure,
    RawAnswer,
    retry_after_seconds,
    system_with_schema,
)
from autolab_core.interfaces import Message, PluginContext
from autolab_core.schema import portable_schema


@attrs.frozen
class HFInferenceOptions(CommonOptions):
    provider: str = "auto"
    token_env: str | None = "HF_TOKEN"
    base_url: str | None = None
    bill_to: str | None = None
    schema_in_prompt: bool = True


class HFInferenceLLM(ChatLLM):
    """Chat completion through Hugging Face Inference Providers."""

    name = "hf-inference"
    description = "Hugging Face Inference Providers (InferenceClient.chat_completion)"
    options_class = HFInferenceOptions
    key_option = "token_env"
    key_hint = "a Hugging Face token with inference access"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self._client: Any = None

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("huggingface_hub") is None:
            return "huggingface_hub is not installed: pip install 'autolab-ml[hf]'"
        return None

    def needs_key(self) -> bool:
        """A self-hosted ``base_url`` needs no token; the Hub may also use a saved login."""
        return not self.opts.base_url

    def client(self) -> Any:
        if self._client is None:
            from huggingface_hub import InferenceClient

            token = os.environ.get(self.key_env) if self.key_env else None
            kwargs: dict[str, Any] = {"timeout": self.opts.timeout_s, "api_key": token or None}
            if self.opts.base_url:
                kwargs["base_url"] = self.opts.base_url
            else:
                kwargs["provider"] = self.opts.provider
            if self.opts.bill_to:
                kwargs["bill_to"] = self.opts.bill_to
            self._client = InferenceClient(**kwargs)
        return self._client

    def _call(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None,
        max_tokens: int,
        temperature: float | None,
    ) -> RawAnswer:
        if schema is not None and self.opts.schema_in_prompt:
            messages = system_with_schema(messages, schema)
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "model": self.model,
            "max_tokens": max_tokens,
        }
        if temperature is not None:
            kwargs["temperature"] = temperature
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": portable_schema(schema),
                                "strict": True},
            }
        output = self._request(kwargs)
        try:
            text = output.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise self.error(f"answer has no choices[0].message: {str(output)[:300]}") from None
        usage = getattr(output, "usage", None)
        return RawAnswer(
            text=text,
            usage=self.usage_from(
                getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0)
            ),
            model=str(getattr(output, "model", "") or self.model),
            raw={"id": getattr(output, "id", None)},
            truncated=getattr(output.choices[0], "finish_reason", None) == "length",
        )

    def _request(self, kwargs: Mapping[str, Any]) -> Any:
        import httpx
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return self.client().chat_completion(**kwargs)
        except HfHubHTTPError as exc:
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            headers = getattr(response, "headers", {}) or {}
            raise HTTPFailure(
                str(exc).splitlines()[0][:300],
                status,
                retry_after_seconds(headers.get("retry-after")),
            ) from None
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise HTTPFailure(f"timed out after {self.opts.timeout_s:g}s: {exc}") from None
        except (httpx.TransportError, OSError) as exc:
            raise HTTPFailure(f"could not reach the inference endpoint: {exc}") from None
        except Exception as exc:  # huggingface_hub's httpx2 raises its own transport errors
            name = type(exc).__name__
            if "Timeout" in name:
                raise HTTPFailure(f"timed out after {self.opts.timeout_s:g}s: {exc}") from None
            if "Connect" in name or "Transport" in name or "Network" in name:
                raise HTTPFailure(f"could not reach the inference endpoint: {exc}") from None
            raise

    def close(self) -> None:
        self._client = None

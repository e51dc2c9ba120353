"""The chat-LLM base: options, retries with backoff, cost, API keys and schema retries.

A provider implements :meth:`ChatLLM._call` (one round trip, returning the raw text, the
structured data if the server returned it separately, and usage); an HTTP provider subclasses
:class:`autolab_core.chat_http.HTTPChatLLM` and writes only ``body`` and ``parse``.
:meth:`ChatLLM.complete` adds the rest: it validates structured answers against the schema and
asks again with the error fed back, a bounded number of times; it retries 408/409/429, 5xx and
network failures with exponential backoff, honouring ``Retry-After``; and every error names the
provider, model and status. API keys: set ``key_option`` to the option that names the
environment variable holding the key; ``check()`` and ``api_key()`` are written here.
No import beyond attrs at module level (httpx is imported when a request is made).
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from autolab_core.errors import ConfigError, LLMError
from autolab_core.interfaces import LLM, Completion, Message, PluginContext, Usage
from autolab_core.schema import extract_json, validate
from autolab_core.validators import non_negative, positive

T = TypeVar("T")


class ProviderError(LLMError):
    """An LLM call that failed; ``status`` is the HTTP status (None for a network error).

    ``usage`` holds what the failed call still consumed (tokens of rejected answers), so a
    budget can charge it.
    """

    def __init__(self, message: str, status: int | None = None,
                 usage: Usage | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.usage = usage or Usage()


class HTTPFailure(Exception):
    """Raised by a provider's round trip: ``status`` None means no answer (timeout, refused)."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _prices(_inst: Any, _attribute: Any, value: Mapping[str, Any]) -> None:
    unknown = set(value) - {"input", "output"}
    if unknown:
        raise ValueError(
            f"prices has unknown keys {sorted(unknown)}; use prices = {{ input = <USD per 1M "
            "input tokens>, output = <USD per 1M output tokens> }}"
        )
    for key, price in value.items():
        if not isinstance(price, int | float) or isinstance(price, bool) or price < 0:
            raise ValueError(f"prices.{key} must be a non-negative number, got {price!r}")


@attrs.frozen
class CommonOptions:
    """Options every provider takes (see docs/llm.md)."""

    model: str = ""
    timeout_s: float = attrs.field(default=120.0, validator=positive)
    max_retries: int = attrs.field(default=4, validator=non_negative)
    backoff_s: float = attrs.field(default=1.0, validator=non_negative)
    max_backoff_s: float = attrs.field(default=60.0, validator=non_negative)
    schema_retries: int = attrs.field(default=2, validator=non_negative)
    max_tokens: int = attrs.field(default=2048, validator=positive)
    temperature: float | None = None
    prices: dict[str, float] = attrs.field(factory=dict, validator=_prices)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens, a.cost_usd + b.cost_usd
    )


@attrs.frozen
class RawAnswer:
    """One round trip's result, before validation."""

    text: str
    data: Any = None  # structured data the server returned separately (a tool call's input)
    usage: Usage = attrs.field(factory=Usage)
    model: str = ""
    raw: Mapping[str, Any] = attrs.field(factory=dict)
    truncated: bool = False  # the server stopped at max_tokens


SCHEMA_NAME = "answer"


PROMPT_ENUM_LIMIT = 16  # longer enums are described, not listed, in the prompt's copy


def prompt_schema(schema: Any) -> Any:
    """The copy of ``schema`` written into the prompt: an ``enum`` of more than
    :data:`PROMPT_ENUM_LIMIT` values (a Worker's ``constrain_lines`` lists every line of the
    file) is described instead of listed, so the prompt does not carry the file twice and
    overflow a small model's context. The full schema still goes to the server, which enforces
    it where it can; the answer is validated against it either way."""
    if isinstance(schema, Mapping):
        enum = schema.get("enum")
        if isinstance(enum, list) and len(enum) > PROMPT_ENUM_LIMIT:
            rest = {k: prompt_schema(v) for k, v in schema.items() if k != "enum"}
            note = f"one of {len(enum)} fixed values given in the instructions"
            return {**rest, "description": f"{schema.get('description', '')} ({note})".strip()}
        return {k: prompt_schema(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [prompt_schema(v) for v in schema]
    return schema


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The instruction added to the system prompt when a schema is given."""
    return (
        "Answer with a single JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(prompt_schema(schema), separators=(",", ":"))
    )


class ChatLLM(LLM):
    """Base class of chat providers. Subclasses set ``options_class`` (a subclass of
    :class:`CommonOptions`) and implement ``_call``."""

    options_class: ClassVar[type[Any] | None] = CommonOptions
    #: The option that names the environment variable holding the API key (e.g.
    #: ``"api_key_env"``); None: this provider takes no key.
    key_option: ClassVar[str | None] = None
    #: What the key is, in words, for error messages ("your Anthropic API key").
    key_hint: str = "the API key"
    #: Waits between retries go through this, so tests can record them instead of sleeping.
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        if not self.opts.model:
            raise ConfigError(f"[llm.{self.name}] model is required, e.g. model = \"<model id>\"")
        self.model: str = self.opts.model
        self.key_env: str | None = getattr(self.opts, self.key_option) if self.key_option else None

    # -- API keys ----------------------------------------------------------------------------
    def needs_key(self) -> bool:
        """Whether requests carry a key (override: e.g. not for a self-hosted ``base_url``)."""
        return bool(self.key_env)

    def check(self) -> str | None:
        missing = self.available()
        if missing:
            return missing
        if self.key_env and self.needs_key() and not os.environ.get(self.key_env):
            return f"${self.key_env} is not set: export {self.key_hint} in it"
        return None

    def api_key(self) -> str | None:
        """The key from ``$key_env``; None when no key is configured; LLMError when unset."""
        if not self.key_env:
            return None
        key = os.environ.get(self.key_env)
        if not key and self.needs_key():
            raise LLMError(
                f"{self.name} model {self.model!r}: ${self.key_env} is not set; export "
                f"{self.key_hint} in it ({self.key_option} names the variable)"
            )
        return key or None

    # -- to implement ------------------------------------------------------------------------
    def _call(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None,
        max_tokens: int,
        temperature: float | None,
    ) -> RawAnswer:
        """One request; raise :class:`HTTPFailure` for an HTTP error or no answer."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for this many tokens at the configured ``prices`` (per 1M tokens)."""
        prices = self.opts.prices
        return (
            input_tokens * float(prices.get("input", 0.0))
            + output_tokens * float(prices.get("output", 0.0))
        ) / 1e6

    def error(self, what: str, status: int | None = None, usage: Usage | None = None) -> ProviderError:
        where = f"HTTP {status}: " if status is not None else ""
        hint = ""
        if status in (401, 403):
            hint = "; check the API key" + (f" in ${self.key_env}" if self.key_env else "")
        elif status == 404:
            hint = "; check base_url and the model name"
        elif status == 429:
            hint = "; rate limited: lower the request rate or raise max_retries"
        return ProviderError(
            f"{self.name} model {self.model!r}: {where}{what}{hint}", status, usage
        )

    def with_retries(self, call: Callable[[], T]) -> T:
        """Run ``call``, retrying 429, 5xx and network failures with exponential backoff."""
        attempt = 0
        while True:
            try:
                return call()
            except HTTPFailure as failure:
                retryable = failure.status is None or failure.status in (408, 409, 429) or (
                    failure.status >= 500
                )
                if not retryable or attempt >= self.opts.max_retries:
                    tries = f" (after {attempt + 1} tries)" if attempt else ""
                    raise self.error(f"{failure}{tries}", failure.status) from None
                wait = failure.retry_after
                if wait is None:
                    wait = self.opts.backoff_s * (2**attempt)
                self.sleep(min(wait, self.opts.max_backoff_s))
                attempt += 1

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Answer ``messages``; with ``schema``, a validated JSON answer in ``data``."""
        msgs = list(messages)
        limit = max_tokens or self.opts.max_tokens
        temp = self.opts.temperature if temperature is None else temperature
        total = Usage()
        attempts: list[dict[str, Any]] = []
        problem = ""
        for _ in range(self.opts.schema_retries + 1 if schema is not None else 1):
            answer = self.with_retries(functools.partial(self._call, list(msgs), schema, limit, temp))
            total = add_usage(total, answer.usage)
            if schema is None:
                return Completion(answer.text, None, total, answer.model or self.model, answer.raw)
            try:
                data = answer.data if answer.data is not None else extract_json(answer.text)
            except ValueError as exc:
                problem = str(exc)
                if answer.truncated:
                    problem = (f"the answer was cut off at max_tokens={limit} before the JSON "
                               "ended (raise max_tokens)")
            else:
                errors = validate(data, schema)
                if not errors:
                    raw = {**answer.raw, "rejected_attempts": attempts}
                    return Completion(answer.text, data, total, answer.model or self.model, raw)
                problem = "; ".join(errors[:8])
            attempts.append({"text": answer.text, "error": problem})
            shown = answer.text if answer.data is None else json.dumps(answer.data)
            msgs = [
                *msgs,
                Message("assistant", shown),
                Message(
                    "user",
                    f"That answer was rejected: {problem}. Reply again with only the corrected "
                    "JSON object, matching the schema exactly.",
                ),
            ]
        raise self.error(
            f"no valid structured answer after {len(attempts)} tries; last problem: {problem}",
            None,
            total,
        )

    def usage_from(self, input_tokens: Any, output_tokens: Any, reported_cost: Any = None) -> Usage:
        """A :class:`Usage` with cost from ``prices``, else the provider's reported cost."""
        tin, tout = int(input_tokens or 0), int(output_tokens or 0)
        cost = self.cost(tin, tout)
        if not self.opts.prices and isinstance(reported_cost, int | float):
            cost = float(reported_cost)
        return Usage(tin, tout, cost)


def system_with_schema(
    messages: Sequence[Message], schema: Mapping[str, Any] | None
) -> list[Message]:
    """``messages`` with the schema instruction appended to the system prompt (or prepended)."""
    msgs = list(messages)
    if schema is None:
        return msgs
    note = schema_instruction(schema)
    for i, m in enumerate(msgs):
        if m.role == "system":
            msgs[i] = Message("system", f"{m.content}\n\n{note}")
            return msgs
    return [Message("system", note), *msgs]

"""What the providers share: options, HTTP retries with backoff, cost, and schema retries.

A provider implements :meth:`ChatLLM._call` (one round trip, returning the raw text, the
structured data if the server returned it separately, and usage). :meth:`ChatLLM.complete`
adds the rest: it validates structured answers against the schema and asks again with the
error fed back, a bounded number of times; it retries 429 and 5xx answers with exponential
backoff, honouring ``Retry-After``; and every error names the provider, model and status.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from autolab.llms.schema import extract_json, validate
from autolab_core.config import parse_options
from autolab_core.errors import ConfigError, LLMError
from autolab_core.interfaces import LLM, Completion, Message, PluginContext, Usage

T = TypeVar("T")


class ProviderError(LLMError):
    """An LLM call that failed; ``status`` is the HTTP status (None for a network error).

    ``usage`` holds what the failed call still consumed (tokens of rejected answers), so a
    budget can charge it.
    """

    def __init__(self, message: str, status: int | None = None, usage: Usage | None = None):
        super().__init__(message)
        self.status = status
        self.usage = usage or Usage()


class HTTPFailure(Exception):
    """Raised by a provider's round trip: ``status`` None means no answer (timeout, refused)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _positive(_inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _non_negative(_inst: Any, attribute: Any, value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


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
    timeout_s: float = attrs.field(default=120.0, validator=_positive)
    max_retries: int = attrs.field(default=4, validator=_non_negative)
    backoff_s: float = attrs.field(default=1.0, validator=_non_negative)
    max_backoff_s: float = attrs.field(default=60.0, validator=_non_negative)
    schema_retries: int = attrs.field(default=2, validator=_non_negative)
    max_tokens: int = attrs.field(default=2048, validator=_positive)
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


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The instruction added to the system prompt when a schema is given."""
    return (
        "Answer with a single JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(schema, separators=(",", ":"))
    )


class ChatLLM(LLM):
    """Base class of the built-in providers. Subclasses set ``options_class`` and ``_call``."""

    options_class: ClassVar[type] = CommonOptions
    #: Waits between retries go through this, so tests can record them instead of sleeping.
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.opts: Any = parse_options(self.options_class, options, f"llm.{self.name}")
        if not self.opts.model:
            raise ConfigError(f"[llm.{self.name}] model is required, e.g. model = \"<model id>\"")
        self.model: str = self.opts.model

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
            hint = "; check the API key" + (
                f" in ${self.key_env}" if getattr(self, "key_env", None) else ""
            )
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
            answer = self.with_retries(lambda m=msgs: self._call(m, schema, limit, temp))  # type: ignore[misc]
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

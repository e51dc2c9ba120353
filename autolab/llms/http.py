"""One httpx round trip that turns every failure into :class:`HTTPFailure`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autolab.llms.base import ChatLLM, HTTPFailure, RawAnswer, retry_after_seconds
from autolab_core.interfaces import Message


def post_json(
    client: Any, url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float
) -> dict[str, Any]:
    """POST ``body`` as JSON and return the JSON answer, or raise :class:`HTTPFailure`."""
    import httpx

    try:
        response = client.post(url, json=dict(body), headers=dict(headers), timeout=timeout)
    except httpx.TimeoutException:
        raise HTTPFailure(f"timed out after {timeout:g}s waiting for {url}") from None
    except httpx.TransportError as exc:
        raise HTTPFailure(f"could not reach {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        text = response.text.strip().replace("\n", " ")
        raise HTTPFailure(
            f"{url} answered {text[:300] or '(empty body)'}",
            response.status_code,
            retry_after_seconds(response.headers.get("retry-after")),
        )
    try:
        data = response.json()
    except ValueError:
        raise HTTPFailure(
            f"{url} answered HTTP {response.status_code} with a body that is not JSON: "
            f"{response.text[:200]!r}",
            response.status_code,
        ) from None
    if not isinstance(data, dict):
        raise HTTPFailure(f"{url} answered JSON that is not an object: {str(data)[:200]}")
    return data


class HTTPChatLLM(ChatLLM):
    """A provider that is one JSON POST per call: subclasses set ``url`` and implement
    ``body``, ``headers`` and ``parse``; the httpx client is made on first use."""

    url: str
    _client: Any = None

    def body(self, messages: Sequence[Message], schema: Mapping[str, Any] | None,
             max_tokens: int, temperature: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def parse(self, data: Mapping[str, Any]) -> RawAnswer:
        raise NotImplementedError

    def _call(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None,
        max_tokens: int,
        temperature: float | None,
    ) -> RawAnswer:
        import httpx

        if self._client is None:
            self._client = httpx.Client()
        data = post_json(
            self._client, self.url, self.body(messages, schema, max_tokens, temperature),
            self.headers(), self.opts.timeout_s,
        )
        return self.parse(data)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

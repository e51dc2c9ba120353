"""Chat providers that are one JSON POST per call, over httpx (imported on first request).

A subclass sets ``url`` and writes ``body`` (the request) and ``parse`` (the answer into a
:class:`~autolab_core.chat.RawAnswer`); headers (content type, the API key from
``key_option``, extra ``headers`` from the options) and every failure mode are handled here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autolab_core.chat import ChatLLM, HTTPFailure, RawAnswer, retry_after_seconds
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
    ``body`` and ``parse``; the httpx client is made on first use."""

    url: str
    _client: Any = None

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry ``key`` (default: ``Authorization: Bearer``)."""
        return {"authorization": f"Bearer {key}"}

    def body(self, messages: Sequence[Message], schema: Mapping[str, Any] | None,
             max_tokens: int, temperature: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        """Content type, the options' extra ``headers``, then the API key's headers."""
        headers = {"content-type": "application/json", **getattr(self.opts, "headers", {})}
        key = self.api_key()
        if key:
            headers.update(self.auth_headers(key))
        return headers

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

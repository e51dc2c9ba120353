"""One httpx round trip that turns every failure into :class:`HTTPFailure`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autolab.llms.base import HTTPFailure, retry_after_seconds


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

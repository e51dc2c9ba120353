"""``arxiv``: the arXiv export API (Atom) through httpx, at most one request per 3 seconds.

Parsing is namespace-aware (``{http://www.w3.org/2005/Atom}entry``), so it reads both the
older feeds (namespaces declared on each extension element, ``http://`` ids) and the newer
ones (namespaces declared on the root, ``https://`` ids). One rate limiter per host is shared
by every instance in the process.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import attrs

from autolab.papers.base import PaperSourceError, clean, newest_first
from autolab.papers.ratelimit import RateLimiter, shared_limiter
from autolab_core.interfaces import PaperSource, PluginContext
from autolab_core.models import Paper
from autolab_core.validators import non_negative

ATOM = "http://www.w3.org/2005/Atom"
ARXIV = "http://arxiv.org/schemas/atom"
_VERSION = re.compile(r"v\d+$")


@attrs.frozen
class ArxivOptions:
    base_url: str = "https://export.arxiv.org/api/query"
    categories: list[str] = attrs.field(factory=list)
    interval_s: float = attrs.field(default=3.0, validator=non_negative)
    timeout_s: float = attrs.field(default=30.0, validator=non_negative)
    max_retries: int = attrs.field(default=2, validator=non_negative)


def _find(el: ET.Element, name: str, ns: str = ATOM) -> ET.Element | None:
    found = el.find(f"{{{ns}}}{name}")
    return found if found is not None or ns != ATOM else el.find(name)  # un-namespaced feeds


def _findall(el: ET.Element, name: str, ns: str = ATOM) -> list[ET.Element]:
    return el.findall(f"{{{ns}}}{name}") or (el.findall(name) if ns == ATOM else [])


def _text(el: ET.Element, name: str, ns: str = ATOM) -> str:
    found = _find(el, name, ns)
    return clean(found.text if found is not None else "")


def arxiv_id(url_or_id: str) -> str:
    """``2501.01234`` from ``http(s)://arxiv.org/abs/2501.01234v2`` (old ids keep their slash)."""
    text = url_or_id.strip()
    if "/abs/" in text:
        text = text.split("/abs/", 1)[1]
    return _VERSION.sub("", text)


def parse_atom(xml_text: str | bytes) -> list[Paper]:
    """The papers in an arXiv Atom feed; an API error entry raises :class:`PaperSourceError`."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise PaperSourceError(f"arXiv answered XML that does not parse: {exc}") from None
    papers = []
    for entry in _findall(root, "entry"):
        raw_id = _text(entry, "id")
        title = _text(entry, "title")
        if "/api/errors" in raw_id or (title == "Error" and not _findall(entry, "author")):
            raise PaperSourceError(f"arXiv API error: {_text(entry, 'summary') or raw_id}")
        links = _findall(entry, "link")
        url = next(
            (ln.get("href") for ln in links if ln.get("rel") == "alternate" and ln.get("href")),
            raw_id or None,
        )
        categories = [c.get("term", "") for c in _findall(entry, "category") if c.get("term")]
        primary = _find(entry, "primary_category", ARXIV)
        if primary is not None and primary.get("term") in categories:
            categories.remove(primary.get("term", ""))
            categories.insert(0, primary.get("term", ""))
        papers.append(
            Paper(
                id=arxiv_id(raw_id),
                title=title,
                summary=_text(entry, "summary"),
                url=url,
                authors=tuple(_text(a, "name") for a in _findall(entry, "author")),
                published=_text(entry, "published")[:10] or None,
                source="arxiv",
                keywords=tuple(categories),
            )
        )
    return papers


def build_query(query: str, categories: list[str], since: str | None) -> str:
    """An arXiv ``search_query``: every word in ``all:``, ANDed, plus categories and dates.

    With no words and no categories it asks for machine learning (``cat:cs.LG``).
    """
    if ":" in query:  # the caller wrote arXiv syntax (ti:, abs:, cat:)
        parts = [f"({query})"]
    else:
        parts = [f"all:{w}" for w in re.findall(r"[\w.-]+", query)]
    if categories:
        parts.append("(" + " OR ".join(f"cat:{c}" for c in categories) + ")")
    if since:
        day = since[:10].replace("-", "")
        parts.append(f"submittedDate:[{day}0000 TO 299912312359]")
    if not any(p.startswith(("all:", "(")) for p in parts):
        parts.insert(0, "cat:cs.LG")
    return " AND ".join(parts)


class ArxivSource(PaperSource):
    """Search arXiv; set ``categories = ["cs.LG"]`` to narrow it."""

    name = "arxiv"
    description = "arXiv export API (Atom), one request per 3 s"
    options_class = ArxivOptions
    opts: ArxivOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        host = urlparse(self.opts.base_url).netloc or self.opts.base_url
        self.limiter: RateLimiter = shared_limiter(host, self.opts.interval_s)
        self._client: Any = None

    def _get(self, params: dict[str, Any]) -> list[Paper]:
        import httpx

        if self._client is None:
            self._client = httpx.Client(headers={"user-agent": "autolab (paper search)"})
        problem = ""
        for _ in range(self.opts.max_retries + 1):
            self.limiter.wait()
            try:
                response = self._client.get(
                    self.opts.base_url, params=params, timeout=self.opts.timeout_s
                )
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 200:
                return parse_atom(response.content)
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in (429, 500, 502, 503, 504):
                break
        raise PaperSourceError(f"arXiv at {self.opts.base_url}: {problem}")

    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        params = {
            "search_query": build_query(query, list(self.opts.categories), since),
            "start": 0,
            "max_results": limit,
            "sortBy": "submittedDate",
            "sortOrder": "descending",
        }
        return newest_first(self._get(params), since)[:limit]

    def get(self, paper_id: str) -> Paper | None:
        found = self._get({"id_list": arxiv_id(paper_id), "max_results": 1})
        return found[0] if found else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

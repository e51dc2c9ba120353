"""``hf-papers``: Hugging Face Papers through huggingface_hub (imported lazily).

``search`` uses ``list_papers(query=...)``, or ``list_daily_papers`` for an empty query. List
items nest most fields under ``paper`` and often lack the summary and keywords, so those are
completed with ``paper_info(id)`` when ``fetch_details`` is on (the default).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import attrs

from autolab.papers.base import PaperSourceError, clean, newest_first
from autolab_core.interfaces import PaperSource, PluginContext
from autolab_core.models import Paper


@attrs.frozen
class HFPapersOptions:
    endpoint: str | None = None  # default: $HF_ENDPOINT or the Hub
    token_env: str | None = "HF_TOKEN"
    fetch_details: bool = True


def to_paper(info: Any) -> Paper:
    """A :class:`Paper` from a huggingface_hub ``PaperInfo``."""
    published = getattr(info, "published_at", None) or getattr(info, "submitted_at", None)
    authors = tuple(getattr(a, "name", "") for a in (getattr(info, "authors", None) or ()))
    return Paper(
        id=str(info.id),
        title=clean(getattr(info, "title", None) or ""),
        summary=clean(getattr(info, "summary", None) or getattr(info, "ai_summary", None) or ""),
        url=f"https://huggingface.co/papers/{info.id}",
        authors=tuple(a for a in authors if a),
        published=published.date().isoformat() if published else None,
        source="hf-papers",
        keywords=tuple(getattr(info, "ai_keywords", None) or ()),
    )


class HFPapersSource(PaperSource):
    """Papers from huggingface.co/papers."""

    name = "hf-papers"
    description = "Hugging Face Papers (search and daily papers)"
    options_class = HFPapersOptions
    opts: HFPapersOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self._api: Any = None

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("huggingface_hub") is None:
            return "huggingface_hub is not installed: pip install 'autolab-ml[hf]'"
        return None

    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            token = os.environ.get(self.opts.token_env) if self.opts.token_env else None
            self._api = HfApi(endpoint=self.opts.endpoint, token=token or False)
        return self._api

    def _complete(self, paper: Paper) -> Paper:
        if not self.opts.fetch_details or (paper.summary and paper.keywords):
            return paper
        full = self.get(paper.id)
        if full is None:
            return paper
        return attrs.evolve(
            full,
            title=full.title or paper.title,
            published=full.published or paper.published,
            authors=full.authors or paper.authors,
        )

    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        try:
            api = self.api()
            if query.strip():
                infos = api.list_papers(query=query, limit=limit)
            else:
                infos = api.list_daily_papers(limit=limit)
            papers = [to_paper(i) for i in infos]
        except Exception as exc:
            raise PaperSourceError(f"hf-papers: {type(exc).__name__}: {exc}") from None
        return [self._complete(p) for p in newest_first(papers, since)[:limit]]

    def get(self, paper_id: str) -> Paper | None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return to_paper(self.api().paper_info(paper_id))
        except HfHubHTTPError as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return None
            raise PaperSourceError(f"hf-papers: paper {paper_id}: {exc}") from None

"""Shared bits of the paper sources: the error type, text helpers, and the mined-papers memory."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

from autolab_core.atomic import write_atomic
from autolab_core.errors import AutolabError
from autolab_core.models import Paper


class PaperSourceError(AutolabError):
    """A paper source that could not answer (network, HTTP status, unreadable file)."""


def clean(text: str | None) -> str:
    """Collapse whitespace (Atom titles and summaries wrap lines)."""
    return re.sub(r"\s+", " ", text or "").strip()


def newest_first(papers: Iterable[Paper], since: str | None = None) -> list[Paper]:
    """Papers published on or after ``since`` (ISO date), newest first; undated ones last."""
    kept = [p for p in papers if not since or (p.published or "") >= since[:10]]
    return sorted(kept, key=lambda p: p.published or "", reverse=True)


MINED_FILE = "papers_mined.json"


class MinedPapers:
    """Which papers the Researcher has already turned into ideas (``<state_dir>/papers_mined.json``).

    A paper is shown to the Researcher until an idea citing it has been proposed; then it is
    remembered here and left out of later prompts, so the same idea is not mined twice.
    """

    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / MINED_FILE
        self.data: dict[str, dict[str, object]] = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                raise PaperSourceError(f"{self.path} is corrupt; delete it to forget mined papers") from None

    def __contains__(self, paper_id: object) -> bool:
        return isinstance(paper_id, str) and paper_id in self.data

    def ideas(self, paper_id: str) -> list[str]:
        return list(self.data.get(paper_id, {}).get("ideas", []))  # type: ignore[call-overload]

    def mark(self, paper_id: str, idea: str) -> None:
        entry = self.data.setdefault(paper_id, {"ideas": [], "first_at": time.time()})
        ideas = entry["ideas"]
        assert isinstance(ideas, list)
        if idea not in ideas:
            ideas.append(idea)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))

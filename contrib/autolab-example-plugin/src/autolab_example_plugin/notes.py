"""``example-notes``: a :class:`~autolab_core.PaperSource` over a folder of Markdown notes.

Each ``*.md`` or ``*.txt`` file under the folder is one "paper": its first line (without
leading ``#``) is the title, the rest the summary, its path without suffix the id, and its
modification date the publication date. Search ranks notes by how many query words they
contain, then newest first.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from autolab_core.interfaces import PaperSource, PluginContext
from autolab_core.models import Paper

_WORD = re.compile(r"[a-z0-9]+")


@attrs.frozen
class NotesOptions:
    """``[papers.example-notes]`` options."""

    #: The folder of notes, relative to the lab root.
    path: str = "notes"


class NotesSource(PaperSource):
    """Papers are the Markdown and text files of one folder."""

    name = "example-notes"
    description = "A folder of Markdown notes as a paper source (the autolab example plugin)."
    options_class = NotesOptions
    opts: NotesOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.root = context.lab_root / self.opts.path

    def check(self) -> str | None:
        if not self.root.is_dir():
            return f"no notes folder {self.root}; create it or set [papers.{self.name}] path"
        return None

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*") if p.suffix in (".md", ".txt"))

    def _paper(self, path: Path) -> Paper:
        lines = path.read_text(errors="replace").splitlines()
        title = lines[0].lstrip("#").strip() if lines else path.stem
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        return Paper(
            id=path.relative_to(self.root).with_suffix("").as_posix(),
            title=title or path.stem,
            summary="\n".join(lines[1:]).strip(),
            url=path.as_uri(),
            published=mtime.date().isoformat(),
            source=self.name,
        )

    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        words = set(_WORD.findall(query.lower()))
        scored: list[tuple[int, str, Paper]] = []
        for path in self._files():
            paper = self._paper(path)
            if since is not None and (paper.published or "") < since:
                continue
            text = f"{paper.title}\n{paper.summary}".lower()
            score = sum(1 for w in words if w in text)
            if score or not words:
                scored.append((score, paper.published or "", paper))
        scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [paper for _, _, paper in scored[:limit]]

    def get(self, paper_id: str) -> Paper | None:
        for path in self._files():
            if path.relative_to(self.root).with_suffix("").as_posix() == paper_id:
                return self._paper(path)
        return None

"""``local``: a folder of notes. Markdown (front matter or first heading = title), BibTeX
(``.bib`` entries) and JSON (an object or a list of objects) files, searched by keyword."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from autolab.papers.base import PaperSourceError, clean
from autolab_core.interfaces import PaperSource, PluginContext
from autolab_core.models import Paper


@attrs.frozen
class LocalOptions:
    path: str = "notes"


def _listify(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        sep = " and " if " and " in value else (";" if ";" in value else ",")
        parts = value.split(sep)
        return tuple(p.strip() for p in parts if p.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def _date(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:10] if re.match(r"^\d{4}(-\d\d(-\d\d)?)?", text) else None


def parse_markdown(text: str, paper_id: str) -> Paper:
    """A note: ``---`` front matter (``key: value`` lines) and a body; title from either."""
    meta: dict[str, str] = {}
    body = text
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            for line in text[3:end].splitlines():
                key, sep, value = line.partition(":")
                if sep and key.strip():
                    meta[key.strip().lower()] = value.strip().strip("\"'")
            body = text[end + 4 :].lstrip("-\n")
    title = meta.get("title", "")
    if not title:
        heading = re.search(r"^#\s+(.+)$", body, re.M)
        title = heading.group(1).strip() if heading else paper_id
    body = re.sub(r"^#\s+.+$", "", body, count=1, flags=re.M) if not meta.get("title") else body
    keywords = meta.get("keywords") or meta.get("tags") or ""
    return Paper(
        id=meta.get("id", paper_id),
        title=clean(title),
        summary=clean(meta.get("summary") or body),
        url=meta.get("url") or None,
        authors=_listify(meta.get("authors")),
        published=_date(meta.get("date") or meta.get("published")),
        source="local",
        keywords=tuple(k.strip(" []") for k in keywords.split(",") if k.strip(" []")),
    )


_BIB_ENTRY = re.compile(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", re.M)


def _bib_fields(body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while True:
        match = re.compile(r"\s*,?\s*(\w+)\s*=\s*").match(body, i)
        if not match:
            break
        key, i = match.group(1).lower(), match.end()
        if i < len(body) and body[i] in "{\"":
            close = "}" if body[i] == "{" else '"'
            depth, j = 0, i
            while j < len(body):
                if body[j] == "{":
                    depth += 1
                elif body[j] == "}":
                    depth -= 1
                if (close == "}" and depth == 0) or (close == '"' and j > i and body[j] == '"'):
                    break
                j += 1
            fields[key] = body[i + 1 : j].replace("{", "").replace("}", "")
            i = j + 1
        else:
            end = re.compile(r"[,\n}]").search(body, i)
            j = end.start() if end else len(body)
            fields[key] = body[i:j].strip()
            i = j
    return fields


def parse_bibtex(text: str) -> list[Paper]:
    """Every ``@article{key, title = {...}, ...}`` entry (``@comment``/``@string`` skipped)."""
    papers = []
    starts = list(_BIB_ENTRY.finditer(text))
    for n, match in enumerate(starts):
        kind, key = match.group(1).lower(), match.group(2)
        if kind in ("comment", "string", "preamble"):
            continue
        end = starts[n + 1].start() if n + 1 < len(starts) else len(text)
        fields = _bib_fields(text[match.end() : end].rstrip().rstrip("}"))
        eprint = fields.get("eprint")
        url = fields.get("url") or (f"https://arxiv.org/abs/{eprint}" if eprint else None)
        year = fields.get("year")
        papers.append(
            Paper(
                id=key,
                title=clean(fields.get("title", key)),
                summary=clean(fields.get("abstract", "")),
                url=url or (f"https://doi.org/{fields['doi']}" if fields.get("doi") else None),
                authors=tuple(a.strip() for a in fields.get("author", "").split(" and ") if a.strip()),
                published=_date(year) if year else None,
                source="local",
                keywords=tuple(k.strip() for k in fields.get("keywords", "").split(",") if k.strip()),
            )
        )
    return papers


def parse_json_notes(data: Any, stem: str) -> list[Paper]:
    """An object or a list of objects with title and summary/abstract (and more, optional)."""
    items = data if isinstance(data, list) else [data]
    papers = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("title"):
            continue
        papers.append(
            Paper(
                id=str(item.get("id") or (stem if len(items) == 1 else f"{stem}-{n}")),
                title=clean(str(item["title"])),
                summary=clean(str(item.get("summary") or item.get("abstract") or "")),
                url=item.get("url"),
                authors=_listify(item.get("authors")),
                published=_date(item.get("published") or item.get("date")),
                source="local",
                keywords=_listify(item.get("keywords")),
            )
        )
    return papers


class LocalSource(PaperSource):
    """Notes in ``<lab>/<path>``: ``.md``, ``.bib`` and ``.json`` files, searched by keyword."""

    name = "local"
    description = "A folder of markdown, BibTeX or JSON notes"
    options_class = LocalOptions
    opts: LocalOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        path = Path(self.opts.path).expanduser()
        self.root = path if path.is_absolute() else context.lab_root / path

    def check(self) -> str | None:
        if not self.root.is_dir():
            return f"{self.root} is not a folder; create it or set [papers.local] path"
        return None

    def papers(self) -> Iterator[Paper]:
        if not self.root.is_dir():
            raise PaperSourceError(
                f"local papers: {self.root} is not a folder; create it or set [papers.local] path"
            )
        for file in sorted(self.root.rglob("*")):
            rel = file.relative_to(self.root).with_suffix("").as_posix()
            try:
                if file.suffix.lower() in (".md", ".markdown"):
                    yield parse_markdown(file.read_text(encoding="utf-8"), rel)
                elif file.suffix.lower() == ".bib":
                    yield from parse_bibtex(file.read_text(encoding="utf-8"))
                elif file.suffix.lower() == ".json":
                    yield from parse_json_notes(json.loads(file.read_text(encoding="utf-8")), rel)
            except (OSError, ValueError) as exc:
                raise PaperSourceError(f"local papers: cannot read {file}: {exc}") from None

    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        terms = [t for t in re.findall(r"\w+", query.lower()) if len(t) > 2]
        scored = []
        for paper in self.papers():
            if since and (paper.published or "") < since[:10]:
                continue
            hay = " ".join([paper.title, paper.summary, *paper.keywords]).lower()
            score = sum(hay.count(t) for t in terms)
            if score or not terms:
                scored.append((score, paper.published or "", paper))
        scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
        return [p for _, _, p in scored[:limit]]

    def get(self, paper_id: str) -> Paper | None:
        return next((p for p in self.papers() if p.id == paper_id), None)

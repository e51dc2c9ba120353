"""The LLM Researcher: the lab's digest and fresh papers in, validated hypotheses out.

The prompt shows the editable files, the best results, recent failures, every idea already
tried (so the model does not repeat one; the Planner still rejects near-duplicates) and papers
not yet mined. The answer is JSON validated against :data:`HYPOTHESES_SCHEMA`. Papers cited
by a proposed hypothesis are remembered in the state dir and not shown again.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autolab.agents.base import LabDigest
from autolab.agents.conversations import Conversation
from autolab.agents.skills import Skill, load_skill
from autolab.papers.base import MinedPapers
from autolab_core.interfaces import LLM, Message, PaperSource
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, Paper

RISKS = ["low", "medium", "high"]


def hypotheses_schema(n: int) -> dict[str, Any]:
    """The answer's schema (all fields required, so it also suits OpenAI's strict mode)."""
    item = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 160},
            "rationale": {"type": "string", "maxLength": 1500},
            "expected_effect": {"type": "string", "maxLength": 300},
            "risk": {"type": "string", "enum": RISKS},
            "citation": {"type": "string", "maxLength": 300},
        },
        "required": ["title", "rationale", "expected_effect", "risk", "citation"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"hypotheses": {"type": "array", "items": item, "maxItems": n}},
        "required": ["hypotheses"],
        "additionalProperties": False,
    }


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9.]+", text.lower()))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + "\n... (truncated)"


def _outcome(exp: Experiment, metric: str) -> str:
    if exp.result is not None:
        return f"{metric} = {exp.result.value:.6g}"
    return (exp.reason or exp.status.value).splitlines()[0][:160]


class LLMResearcher:
    """Implements ``Proposer`` with an LLM. ``papers`` may be empty."""

    def __init__(
        self,
        llm: LLM,
        papers: Sequence[PaperSource] = (),
        state_dir: Path | str = ".autolab",
        skill: Skill | None = None,
        *,
        conversations_dir: Path | str | None = None,
        paper_query: str = "",
        papers_per_source: int = 5,
        max_tried: int = 80,
        max_file_chars: int = 24000,
        lab_root: Path | str | None = None,
    ) -> None:
        self.llm = llm
        self.papers = list(papers)
        self.skill = skill or load_skill("researcher", lab_root)
        self.mined = MinedPapers(state_dir)
        self.conversations_dir = conversations_dir
        self.paper_query = paper_query
        self.papers_per_source = papers_per_source
        self.max_tried = max_tried
        self.max_file_chars = max_file_chars
        self.last_conversation: Conversation | None = None

    # -- the prompt --------------------------------------------------------------------------
    def fresh_papers(self, notes: list[str]) -> list[Paper]:
        """Papers from every source that no earlier hypothesis has cited."""
        found: dict[str, Paper] = {}
        for source in self.papers:
            try:
                for paper in source.search(self.paper_query, limit=self.papers_per_source * 2):
                    if paper.id not in self.mined and paper.id not in found:
                        found[paper.id] = paper
                        if sum(p.source == paper.source for p in found.values()) >= self.papers_per_source:
                            break
            except Exception as exc:  # a paper source must not stop the Researcher
                notes.append(f"paper source {source.name!r} failed: {type(exc).__name__}: {exc}")
        return list(found.values())

    def prompt(self, digest: LabDigest, n: int, papers: Sequence[Paper]) -> str:
        d = digest
        goal = f"{d.direction.value} {d.metric}"
        parts = [f"# Goal\n{goal}."]
        if d.best_value is not None:
            noise = f" (noise sigma {d.sigma:.3g})" if d.sigma else ""
            parts.append(f"Current main scores {d.metric} = {d.best_value:.6g}{noise}. "
                         f"A change must beat it by more than the noise to be kept.")
        files = "\n\n".join(
            f"## {path}\n```\n{_clip(text, self.max_file_chars)}\n```"
            for path, text in d.files.items()
        )
        parts.append(f"# Editable files\n{files}")
        candidates = [e for e in d.experiments if e.role == "candidate"]
        finished = [e for e in candidates if e.result is not None]
        if finished:
            ranked = sorted(finished, key=lambda e: e.result.value,  # type: ignore[union-attr]
                            reverse=d.direction.value == "maximize")
            parts.append("# Best results so far\n" + "\n".join(
                f"- {e.hypothesis.title}: {_outcome(e, d.metric)}" for e in ranked[:5]))
        failed = [e for e in candidates if e.status in (ExperimentStatus.FAILED,
                                                        ExperimentStatus.REJECTED)]
        if failed:
            parts.append("# Recent failures\n" + "\n".join(
                f"- {e.hypothesis.title}: {_outcome(e, d.metric)}" for e in failed[-5:]))
        tried = self.tried_titles(d.experiments)
        if tried:
            parts.append("# Already tried (do not propose these again, nor rewordings)\n"
                         + "\n".join(f"- {t}" for t in tried[-self.max_tried:]))
        if papers:
            parts.append("# Papers (cite by id when an idea comes from one)\n" + "\n".join(
                f"- id: {p.id}\n  title: {p.title}\n  summary: {_clip(p.summary, 700)}"
                for p in papers))
        parts.append(f"# Task\nPropose up to {n} new hypotheses, each one change to the "
                     "editable files, as JSON.")
        return "\n\n".join(parts)

    @staticmethod
    def tried_titles(experiments: Sequence[Experiment]) -> list[str]:
        seen: dict[str, str] = {}
        for e in experiments:
            if e.role == "candidate" and e.hypothesis.title:
                seen.setdefault(_norm(e.hypothesis.title), e.hypothesis.title)
        return list(seen.values())

    # -- Proposer ----------------------------------------------------------------------------
    def propose(self, digest: LabDigest, n: int) -> list[Hypothesis]:
        """Up to ``n`` hypotheses. LLMError and BudgetExceeded propagate (after recording)."""
        notes: list[str] = []
        papers = self.fresh_papers(notes)
        conv = Conversation("researcher", self.conversations_dir, {
            "main_commit": digest.main_commit, "n": n, "papers": [p.id for p in papers],
            "notes": notes,
        })
        self.last_conversation = conv
        messages = [Message("system", self.skill.body),
                    Message("user", self.prompt(digest, n, papers))]
        answer = conv.call(self.llm, messages, hypotheses_schema(n))
        tried = {_norm(t) for t in self.tried_titles(digest.experiments)}
        by_ref = {p.id: p for p in papers} | {p.url: p for p in papers if p.url}
        out: list[Hypothesis] = []
        dropped: list[str] = []
        unknown: list[str] = []
        for item in answer.data["hypotheses"][:n]:
            title = item["title"].strip()
            if not title or _norm(title) in tried:
                dropped.append(title)
                continue
            tried.add(_norm(title))
            citation = item["citation"].strip() or None
            paper = by_ref.get(citation or "") or next(
                (p for p in papers if citation and p.id in citation), None)
            if citation and paper is None:
                # a citation must trace to a paper the model was shown; an invented one would
                # put a false source on a promotion's commit
                unknown.append(citation)
                citation = None
            h = Hypothesis(
                id=f"llm-{secrets.token_hex(5)}", title=title,
                rationale=item["rationale"].strip(),
                expected_effect=item["expected_effect"].strip(), risk=item["risk"],
                citation=citation, source="llm", conversation_id=conv.id,
            )
            out.append(h)
            if paper is not None:
                self.mined.mark(paper.id, title)
        conv.finish({"hypotheses": [h.id for h in out], "dropped_as_tried": dropped,
                     "unknown_citations_dropped": unknown})
        return out

"""The LLM Worker: one hypothesis in, one validated search/replace edit out.

The model answers JSON (:func:`edits_schema`): a list of ``{file, search, replace}`` edits.
Free-form unified diffs fail often with small models; search/replace blocks whose search
text must occur exactly once do much better, and with ``constrain_lines=True`` the schema
restricts ``search`` to the files' own (unique) lines, so even a weak model cannot invent
one. Every answer goes through :func:`autolab.agents.edits.apply_edits`; a rejected edit is
sent back with the reason, up to ``max_attempts`` times, then :class:`PatchError` is raised
with that reason (the orchestrator records the experiment as rejected).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autolab.agents.conversations import Conversation
from autolab.agents.edits import DEFAULT_LIMITS, Edit, PatchLimits, apply_edits, diff
from autolab.agents.skills import Skill, load_skill
from autolab_core.errors import BudgetExceeded, LLMError, PatchError
from autolab_core.interfaces import LLM, Message
from autolab_core.models import Hypothesis


def unique_lines(text: str) -> list[str]:
    """The non-blank lines of ``text`` that occur exactly once (valid single-line searches)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return [ln for ln in dict.fromkeys(lines) if text.count(ln) == 1]


def edits_schema(files: Mapping[str, str], constrain_lines: bool = False) -> dict[str, Any]:
    """The answer's schema; with ``constrain_lines`` the search text is an enum of real lines."""
    search: dict[str, Any] = {"type": "string"}
    if constrain_lines:
        search = {"type": "string", "enum": [ln for t in files.values() for ln in unique_lines(t)]}
    return {
        "type": "object",
        "properties": {
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "enum": sorted(files)},
                        "search": search,
                        "replace": {"type": "string"},
                    },
                    "required": ["file", "search", "replace"],
                    "additionalProperties": False,
                },
            },
            "summary": {"type": "string", "maxLength": 400},
        },
        "required": ["edits", "summary"],
        "additionalProperties": False,
    }


@attrs.frozen
class WorkerResult:
    """A validated edit: new file contents, the edits (``Hypothesis.edits`` form), provenance."""

    files: dict[str, str]
    edits: tuple[dict[str, str], ...]
    summary: str
    conversation_id: str
    attempts: int
    diff: str


class LLMWorker:
    """Implements ``PatchWriter`` with an LLM."""

    def __init__(
        self,
        llm: LLM,
        editable: Sequence[str],
        skill: Skill | None = None,
        *,
        protected: Sequence[str] = (),
        limits: PatchLimits = DEFAULT_LIMITS,
        max_attempts: int = 3,
        constrain_lines: bool = False,
        conversations_dir: Path | str | None = None,
        lab_root: Path | str | None = None,
        max_tokens: int | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.llm = llm
        self.editable = list(editable)
        self.protected = list(protected)
        self.skill = skill or load_skill("worker", lab_root)
        self.limits = limits
        self.max_attempts = max_attempts
        self.constrain_lines = constrain_lines
        self.conversations_dir = conversations_dir
        self.max_tokens = max_tokens
        self.last_result: WorkerResult | None = None
        self.last_conversation: Conversation | None = None

    def prompt(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> str:
        h = hypothesis
        lines = [f"# Hypothesis\nTitle: {h.title}"]
        if h.rationale:
            lines.append(f"Rationale: {h.rationale}")
        if h.expected_effect:
            lines.append(f"Expected effect: {h.expected_effect}")
        shown = "\n\n".join(f"## {path}\n```\n{text}\n```" for path, text in files.items())
        lines.append(f"\n# Editable files (edit only these)\n{shown}")
        if self.protected:
            lines.append(f"\nProtected files (never edit): {', '.join(self.protected)}")
        lines.append(
            f"\n# Task\nWrite the search/replace edits that implement this hypothesis "
            f"(at most {self.limits.max_edits} edits, "
            f"{self.limits.max_changed_lines} changed lines)."
        )
        if self.constrain_lines:
            lines.append("Each search must be exactly one whole line of the file.")
        return "\n".join(lines)

    def write_edits(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> WorkerResult:
        """A validated edit, or PatchError with the reason (LLM failures and a spent LLM budget
        included, so the orchestrator records a rejection instead of retrying forever)."""
        files = {p: t for p, t in files.items() if p in self.editable and p not in self.protected}
        if not files:
            raise PatchError(f"none of the editable files {self.editable} exist at the base commit")
        conv = Conversation("worker", self.conversations_dir,
                            {"hypothesis": hypothesis.id, "title": hypothesis.title},
                            parent=hypothesis.conversation_id, key=hypothesis.id)
        self.last_conversation = conv
        if hypothesis.edits:  # the idea came with its edits (a user's `autolab try`)
            new = self._validate(files, hypothesis.edits)
            return self._done(conv, files, new, hypothesis.edits, "edits given with the idea", 0)
        schema = edits_schema(files, self.constrain_lines)
        messages = [Message("system", self.skill.body), Message("user", self.prompt(hypothesis, files))]
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                answer = conv.call(self.llm, messages, schema, max_tokens=self.max_tokens)
            except LLMError as exc:
                conv.finish({"rejected": f"the LLM failed: {exc}"})
                raise PatchError(f"the LLM failed to write an edit: {exc}") from None
            except BudgetExceeded as exc:  # reject this one; the Researcher then stops the LLM
                conv.finish({"rejected": str(exc)})
                raise PatchError(str(exc)) from None
            edits = answer.data["edits"]
            try:
                new = self._validate(files, edits)
            except PatchError as exc:
                reason = str(exc)
                conv.note("rejected", reason)
                messages = [
                    *messages,
                    Message("assistant", json.dumps(answer.data)),
                    Message("user", f"That edit was rejected: {reason}\nFix it and answer again "
                                    "with the complete JSON."),
                ]
                continue
            return self._done(conv, files, new, edits, answer.data.get("summary", ""), attempt)
        conv.finish({"rejected": reason, "attempts": self.max_attempts})
        raise PatchError(f"no valid edit after {self.max_attempts} attempts: {reason}")

    def _validate(self, files: Mapping[str, str], edits: Sequence[Any]) -> dict[str, str]:
        return apply_edits(files, edits, self.editable, protected=self.protected,
                           limits=self.limits)

    def _done(self, conv: Conversation, files: Mapping[str, str], new: dict[str, str],
              edits: Sequence[Any], summary: str, attempts: int) -> WorkerResult:
        as_dicts = tuple(Edit.coerce(e).to_dict() for e in edits)
        result = WorkerResult(new, as_dicts, str(summary), conv.id, attempts, diff(files, new))
        conv.finish({"edits": list(as_dicts), "summary": result.summary, "diff": result.diff})
        self.last_result = result
        return result

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        """``PatchWriter``: the new contents of each changed editable file."""
        return self.write_edits(hypothesis, files).files

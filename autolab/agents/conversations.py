"""Provenance: every prompt sent to an LLM and every answer, stored as JSON.

A :class:`Conversation` groups the calls one role made for one task (a Researcher's batch of
proposals, a Worker's edit with its retries) and is written to ``<dir>/<id>.json`` after each
call, so a crash loses nothing. Its id goes into ``Hypothesis.conversation_id``; the
orchestrator commits the conversations behind experiments to ``lab-records/conversations/``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autolab_core.atomic import write_atomic
from autolab_core.errors import AutolabError
from autolab_core.interfaces import LLM, Completion, Message


def new_conversation_id(role: str) -> str:
    """Sortable and unique: ``20250101-120000-researcher-3f9a1c``."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{role}-{secrets.token_hex(3)}"


class Conversation:
    """The calls of one role for one task. With ``directory`` None it is kept in memory only.

    With ``parent`` (an existing conversation's id, e.g. the Researcher's that proposed the
    hypothesis) the record is stored inside that file under ``followups[key]`` and shares its
    id, so the one file committed with an experiment holds both the idea and its edit.
    """

    def __init__(
        self,
        role: str,
        directory: Path | str | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        parent: str | None = None,
        key: str | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.embedded_key: str | None = None
        if parent and self.directory is not None and (self.directory / f"{parent}.json").exists():
            self.id = parent
            self.embedded_key = f"{role}:{key}" if key else role
        else:
            self.id = new_conversation_id(role)
        self.record: dict[str, Any] = {
            "id": self.id,
            "role": role,
            "started_at": time.time(),
            "meta": dict(meta or {}),
            "calls": [],
            "outcome": None,
        }

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / f"{self.id}.json"

    def call(
        self,
        llm: LLM,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Completion:
        """``llm.complete(...)``, with the prompt and the answer (or the error) recorded."""
        entry: dict[str, Any] = {
            "at": time.time(),
            "llm": getattr(llm, "name", ""),
            "model": str(getattr(llm, "model", "")),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "schema": dict(schema) if schema is not None else None,
        }
        self.record["calls"].append(entry)
        try:
            completion = llm.complete(messages, schema, **kwargs)
        except AutolabError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            usage = getattr(exc, "usage", None)
            if usage is not None:
                entry["usage"] = _usage(usage)
            self.save()
            raise
        entry["answer"] = {"text": completion.text, "data": completion.data,
                           "model": completion.model}
        entry["usage"] = _usage(completion.usage)
        rejected = (completion.raw or {}).get("rejected_attempts")
        if rejected:
            entry["rejected_attempts"] = list(rejected)
        self.save()
        return completion

    def note(self, key: str, value: Any) -> None:
        """Attach something to the last call (e.g. why its edit was rejected)."""
        if self.record["calls"]:
            self.record["calls"][-1][key] = value
        else:
            self.record["meta"][key] = value
        self.save()

    def finish(self, outcome: Any) -> None:
        self.record["outcome"] = outcome
        self.record["finished_at"] = time.time()
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        record = self.record
        if self.embedded_key is not None:
            record = json.loads(self.path.read_text())
            record.setdefault("followups", {})[self.embedded_key] = self.record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(record, indent=1, default=str))


def _usage(usage: Any) -> dict[str, Any]:
    return {
        "input_tokens": getattr(usage, "input_tokens", 0),
        "output_tokens": getattr(usage, "output_tokens", 0),
        "cost_usd": getattr(usage, "cost_usd", 0.0),
    }


def load_conversation(directory: Path | str, conversation_id: str) -> dict[str, Any]:
    """A stored conversation as a dict."""
    return json.loads((Path(directory) / f"{conversation_id}.json").read_text())

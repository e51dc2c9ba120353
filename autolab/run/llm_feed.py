"""The LLM Researcher and Worker in their own thread, so no slot waits on a slow model.

:class:`LLMFeed` asks the Researcher for ideas and the Worker for their patches, and hands each
written idea (:class:`WrittenIdea`) to the proposal pipeline
(:class:`autolab.run.proposals.ProposalPipeline`), which queues it ahead of the knob-explorer
candidates it keeps ready meanwhile.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from autolab.agents.base import LabDigest, PatchWriter, Proposer
from autolab.agents.planner import check_hypothesis
from autolab.run.ledger import Ledger
from autolab_core.errors import BudgetExceeded, LLMError, PatchError
from autolab_core.models import Hypothesis


@attrs.frozen
class WrittenIdea:
    """An LLM idea with its patch written on ``base_commit`` (or why it could not be)."""

    hypothesis: Hypothesis
    base_commit: str
    base_code: str
    files: dict[str, str] | None = None
    edits: tuple[dict[str, Any], ...] | None = None
    error: str | None = None


class LLMFeed:
    """The LLM Researcher and Worker in their own thread; written ideas arrive on ``out``.

    ``waiting()`` counts LLM candidates queued and not yet submitted: the feed asks for at most
    ``depth`` minus that. ``finished`` says why it stopped (no more ideas, repeated failures, the
    LLM budget), or is empty while it runs.
    """

    def __init__(self, ledger: Ledger, proposer: Proposer, writer: PatchWriter,
                 digest: Callable[[], LabDigest], *, depth: int,
                 candidates_left: Callable[[], bool], waiting: Callable[[], int],
                 stop: threading.Event, max_errors: int = 3) -> None:
        self.ledger, self.proposer, self.writer, self.digest = ledger, proposer, writer, digest
        self.depth, self.candidates_left, self.waiting = depth, candidates_left, waiting
        self.max_errors = max_errors
        self.out: queue.Queue[WrittenIdea] = queue.Queue()
        self.finished = ""
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="autolab-llm", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        errors = 0
        while not self._stop.is_set() and not self.finished:
            wanted = self.depth - self.waiting() - self.out.qsize()
            if wanted <= 0 or not self.candidates_left():
                self._stop.wait(0.5)
                continue
            try:
                errors = self._round(wanted, errors)
            except BudgetExceeded as exc:
                self.finished = str(exc)
            except Exception as exc:  # the feed must not die silently
                self.ledger.say(f"[red]LLM feed error: {type(exc).__name__}: {exc}[/]")
                self.finished = f"the LLM feed stopped ({type(exc).__name__})"

    def _round(self, wanted: int, errors: int) -> int:
        """One call of the Researcher and a patch for each idea; returns the failure count."""
        digest = self.digest()
        try:
            hypotheses = self.proposer.propose(digest, wanted)
        except LLMError as exc:
            errors += 1
            self.ledger.say(f"[red]the Researcher failed ({errors} in a row): {exc}[/]")
            if errors >= self.max_errors:
                self.finished = f"the Researcher failed {errors} times in a row"
            else:
                self._stop.wait(min(60.0, 2.0 ** errors))
            return errors
        if not hypotheses:
            self.finished = "the Researcher has no more ideas"
            return 0
        editable = self.ledger.config.files.editable
        files = self.ledger.lab.files_at(digest.main_commit, editable)
        for h in hypotheses:
            if self._stop.is_set():
                break
            self.out.put(self._write(h, digest, files))
        return 0

    def _write(self, h: Hypothesis, digest: LabDigest, files: Mapping[str, str]) -> WrittenIdea:
        idea = WrittenIdea(h, digest.main_commit, digest.code_hash)
        why = check_hypothesis(h, self.ledger.experiments(), digest.code_hash)
        if why:
            return attrs.evolve(idea, error=why)
        try:
            new_files = self.writer.write_patch(h, files)
        except (PatchError, LLMError) as exc:
            return attrs.evolve(idea, error=f"invalid patch: {exc}")
        written = getattr(self.writer, "last_result", None)
        edits = tuple(dict(e) for e in written.edits) if written is not None and getattr(
            written, "edits", None) else None
        return attrs.evolve(idea, files=dict(new_files), edits=edits)

"""Researcher -> Planner -> Worker, in a background thread, feeding the ready queue.

:class:`ProposalPipeline` gets everything it uses as explicit parameters: the
:class:`~autolab.run.ledger.Ledger`, the roles (:class:`Roles`), the queue depth, a
``candidates_left()`` callable, the pre-queue check (:mod:`autolab.run.smoke`) and a
``housekeeping()`` callable for idle moments. It never sees the loop.

With an LLM Researcher and the knob explorer in reserve (``Roles.fallback``), the LLM works in
its own thread (:class:`LLMFeed`) while this thread keeps a couple of knob-explorer candidates
ready, so no slot waits on a slow or failing model. When an LLM idea is written, the queued knob
candidates are held back (their commit set aside) until the LLM candidate has been submitted:
it takes the next free slot.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from autolab.agents.base import LabDigest, PatchWriter, Proposer
from autolab.agents.edits import validate_patch
from autolab.agents.llm_roles import patch_limits
from autolab.agents.planner import check_code, check_hypothesis
from autolab.run import gate
from autolab.run.ledger import Ledger
from autolab.run.llm_feed import LLMFeed, WrittenIdea
from autolab.run.smoke import SmokeCheck
from autolab_core.errors import BudgetExceeded, LLMError, PatchError
from autolab_core.hashing import content_hash
from autolab_core.lab import BRANCH_PREFIX, RECORDS
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis
from autolab_core.vocab import Role


@attrs.define
class Roles:
    """The Researcher and Worker in use, and the knob explorer kept in reserve (if any)."""

    proposer: Proposer
    writer: PatchWriter
    fallback: tuple[Proposer, PatchWriter] | None = None

    def fall_back(self) -> bool:
        """Switch to the reserve roles; False when there are none."""
        if self.fallback is None:
            return False
        self.proposer, self.writer = self.fallback
        self.fallback = None
        return True


def lab_digest(ledger: Ledger) -> LabDigest:
    """What the Researcher reads: main's editable files, every experiment, the noise."""
    lab, config = ledger.lab, ledger.config
    main = lab.main_commit()
    code = lab.files_hash(main, ledger.code_paths)
    exps = ledger.experiments()
    main_values = gate.values(gate.main_runs(exps, code))
    return LabDigest(
        metric=config.metric.name,
        direction=config.metric.dir,
        files=lab.files_at(main, config.files.editable),
        experiments=exps,
        best_value=sum(main_values) / len(main_values) if main_values else None,
        sigma=gate.pooled_sigma(exps, config.promotion.min_sigma),
        main_commit=main,
        code_hash=code,
    )


def rebase(ledger: Ledger, exp: Experiment) -> None:
    """Move a queued candidate onto the current main; the pipeline re-writes its patch."""
    moved = attrs.evolve(exp, base_commit=ledger.lab.main_commit(), commit=None, code_hash=None,
                         patch="", base_code=ledger.main_code())
    others = [e for e in ledger.experiments() if e.id != exp.id]
    why = check_hypothesis(exp.hypothesis, others, moved.base_code or "")
    if why:
        ledger.reject(moved, why)
    else:
        ledger.put(moved)


def branch_message(exp: Experiment) -> str:
    h = exp.hypothesis
    lines = [f"autolab: experiment {exp.id}: {h.title}", ""]
    if h.rationale:
        lines.append(f"Rationale: {h.rationale}")
    lines.append(f"Source: {h.source}")
    if h.citation:
        lines.append(f"Citation: {h.citation}")
    if h.conversation_id:
        lines.append(f"Conversation: {RECORDS}/conversations/{h.conversation_id}.json")
    lines.append(f"Base: {exp.base_commit}")
    return "\n".join(lines)


class ProposalPipeline:
    """Keeps ``depth`` ready candidates queued, in a background thread."""

    MAX_ERRORS = 3  # Researcher failures in a row before falling back to the knob explorer
    FILL_AHEAD = 2  # knob candidates kept ready while the LLM works

    def __init__(self, ledger: Ledger, roles: Roles, *, depth: int,
                 candidates_left: Callable[[], bool], smoke: SmokeCheck,
                 housekeeping: Callable[[], bool] = lambda: False) -> None:
        self.ledger = ledger
        self.roles = roles
        self.depth = depth
        self.candidates_left = candidates_left
        self.smoke = smoke
        self.housekeeping = housekeeping
        self.exhausted = False  # the Researcher has no more ideas
        self.errors = 0
        self.inbox = ledger.lab.state_dir / "inbox.jsonl"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="autolab-proposer", daemon=True)
        self.feed: LLMFeed | None = None
        self._llm_ids: set[str] = set()  # candidates planned from the feed
        if roles.fallback is not None:
            self.feed = LLMFeed(ledger, roles.proposer, roles.writer, lambda: lab_digest(ledger),
                                depth=depth,
                                candidates_left=candidates_left, waiting=self._llm_waiting,
                                stop=self._stop, max_errors=self.MAX_ERRORS)

    def start(self) -> None:
        if self.feed is not None:
            self.feed.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        if self.feed is not None:
            self.feed.join()
        self.ledger.fillers_held = False

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception as exc:  # the pipeline must not die silently
                self.ledger.say(f"[red]proposer error: {type(exc).__name__}: {exc}[/]")
                worked = False
            self._stop.wait(0.05 if worked else 0.5)

    def _queued_candidates(self) -> int:
        return sum(1 for e in self.ledger.experiments()
                   if e.role == Role.CANDIDATE and e.status is ExperimentStatus.QUEUED)

    def step(self) -> bool:
        """One unit of work; False when there was nothing to do."""
        if self._take_inbox():
            return True
        for exp in self.ledger.experiments():
            if exp.role == Role.CANDIDATE and exp.status is ExperimentStatus.QUEUED and not exp.commit:
                self.materialize(exp)
                return True
        if self.housekeeping():
            return True
        if self.feed is not None:
            return self._step_with_feed(self.feed)
        if not self.candidates_left() or self._queued_candidates() >= self.depth:
            return False
        digest = lab_digest(self.ledger)
        try:
            hypotheses = self.roles.proposer.propose(digest, self.depth - self._queued_candidates())
            self.errors = 0
        except LLMError as exc:
            self._researcher_failed(exc)
            return False
        except BudgetExceeded as exc:
            if not self.roles.fall_back():
                self.ledger.say(f"[yellow]{exc}; no more ideas[/]")
                self.exhausted = True
                return False
            self.ledger.say(f"[yellow]{exc}; switching to the knob explorer[/]")
            return True
        if not hypotheses:
            self.exhausted = True
            return False
        self.exhausted = False
        for h in hypotheses:
            self.plan(h, digest.code_hash)
        return True

    # -- the LLM in its own thread, knob candidates meanwhile ------------------------------------
    def _llm_waiting(self) -> int:
        """LLM candidates queued and not yet submitted."""
        return sum(1 for e in self.ledger.experiments()
                   if e.id in self._llm_ids and e.status is ExperimentStatus.QUEUED)

    def _step_with_feed(self, feed: LLMFeed) -> bool:
        if not feed.out.empty():
            self.ledger.fillers_held = True  # no knob candidate starts ahead of this idea
            written = feed.out.get()
            self._plan_written(written)
            return True
        if self._llm_waiting():
            self.ledger.fillers_held = True
            return False
        self.ledger.fillers_held = False
        if feed.finished:
            self.feed = None
            if self.roles.fall_back():
                self.ledger.say(f"[yellow]{feed.finished}; continuing with the knob explorer[/]")
            else:
                self.exhausted = True
            return True
        assert self.roles.fallback is not None
        proposer, _ = self.roles.fallback
        if (not self.candidates_left() or len(self.ledger.ready()) >= self.FILL_AHEAD
                or self._queued_candidates() >= self.depth):
            return False
        digest = lab_digest(self.ledger)
        ideas = proposer.propose(digest, 1)
        for h in ideas:
            self.plan(h, digest.code_hash)
        return bool(ideas)

    def _plan_written(self, written: WrittenIdea) -> None:
        """An LLM idea the feed has written (or failed to write): queue or reject it."""
        seed = self._first_seed(self.ledger.experiments(), written.base_code)
        exp = attrs.evolve(self.ledger.new(written.hypothesis, Role.CANDIDATE, seed=seed),
                           base_commit=written.base_commit, base_code=written.base_code)
        self._llm_ids.add(exp.id)
        if written.error:
            self.ledger.reject(exp, written.error)
            return
        why = check_hypothesis(exp.hypothesis, self.ledger.experiments(), written.base_code)
        if why:
            self.ledger.reject(exp, why)
            return
        self.materialize(exp, written.files, written.edits)

    def _researcher_failed(self, exc: LLMError) -> None:
        self.errors += 1
        say = self.ledger.say
        say(f"[red]the Researcher failed ({self.errors} in a row): {exc}[/]")
        if self.errors >= self.MAX_ERRORS:
            if self.roles.fall_back():
                say("[yellow]switching to the knob explorer[/]")
            else:
                self.exhausted = True
        self._stop.wait(min(60.0, 2.0 ** self.errors))

    def plan(self, h: Hypothesis, code: str) -> Experiment | None:
        """The Planner's first check, then the Worker's patch; None when rejected."""
        exps = self.ledger.experiments()
        exp = self.ledger.new(h, Role.CANDIDATE, seed=self._first_seed(exps, code))
        why = check_hypothesis(h, exps, code)
        if why:
            self.ledger.reject(exp, why)
            return None
        return self.materialize(exp)

    @staticmethod
    def _first_seed(exps: Sequence[Experiment], code: str | None) -> int:
        """A seed main's code never ran on: a patch that pins one of main's seeds then
        reproduces that run bit for bit and is flagged (``seed_ignored``)."""
        return gate.fresh_seeds(gate.seeds_used(exps, [code]), 1)[0]

    def _writer_for(self, exp: Experiment) -> PatchWriter:
        """The knob explorer writes knob changes while the LLM runs beside it."""
        if self.feed is not None and self.roles.fallback and exp.hypothesis.changes \
                and exp.id not in self._llm_ids:
            return self.roles.fallback[1]
        return self.roles.writer

    def materialize(self, exp: Experiment, new_files: dict[str, str] | None = None,
                    edits: tuple[dict[str, Any], ...] | None = None) -> Experiment | None:
        """Write the patch for a queued candidate (unless ``new_files`` is given, already
        written) and commit it on its branch (or reject)."""
        lab, config = self.ledger.lab, self.ledger.config
        files = lab.files_at(exp.base_commit, config.files.editable)
        try:
            if new_files is None:
                writer = self._writer_for(exp)
                new_files = writer.write_patch(exp.hypothesis, files)
                written = getattr(writer, "last_result", None)  # an LLM worker's edits
                if written is not None and getattr(written, "edits", None):
                    edits = tuple(dict(e) for e in written.edits)
            validate_patch(files, new_files, config.files.editable,
                           protected=config.files.protected, limits=patch_limits(config))
        except PatchError as exc:
            self.ledger.reject(exp, f"invalid patch: {exc}")
            return None
        if edits:
            exp = attrs.evolve(exp, hypothesis=attrs.evolve(exp.hypothesis, edits=edits))
        all_code = lab.files_at(exp.base_commit, self.ledger.code_paths)
        code_hash = content_hash({**all_code, **new_files})
        why = check_code(code_hash, self.ledger.experiments(), exp.base_code or "", exp.id)
        if why:
            self.ledger.reject(exp, why)
            return None
        branch = f"{BRANCH_PREFIX}{exp.id}"
        message = branch_message(exp)
        if lab.branch_exists(branch):  # rebasing onto a newer main
            commit = lab.rebase_branch(branch, exp.base_commit, new_files, message)
        else:
            commit = lab.create_branch(branch, exp.base_commit, new_files, message)
        failure = self.smoke(exp, commit)
        if failure:
            self.ledger.reject(attrs.evolve(exp, branch=branch, commit=commit,
                                            code_hash=code_hash), failure)
            return None
        return self.ledger.put(attrs.evolve(
            exp, branch=branch, commit=commit, code_hash=code_hash,
            tree_hash=lab.tree_of(commit), patch=lab.diff(exp.base_commit, commit),
        ))

    def _take_inbox(self) -> bool:
        """Ideas a user queued with ``autolab try``."""
        if not self.inbox.exists():
            return False
        taken = self.inbox.with_suffix(".taking")
        self.inbox.replace(taken)
        for line in taken.read_text().splitlines():
            if line.strip():
                self.plan(Hypothesis.from_dict(json.loads(line)), self.ledger.main_code())
        taken.unlink()
        return True


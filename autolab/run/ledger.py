"""The experiments of one lab: live records in the state directory, records on ``main``.

Every state change goes through :meth:`Ledger.put` (written to ``.autolab/`` before it is
acted on); :meth:`Ledger.record` queues a commit of the records to ``main`` and
:meth:`Ledger.flush_records` makes it. This is the bottom layer of :mod:`autolab.run`: it
imports nothing else from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import attrs

from autolab_core.errors import AutolabError
from autolab_core.hooks import Hooks
from autolab_core.lab import RECORDS, Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, id_key
from autolab_core.plugins import PluginManager, get_plugin_manager
from autolab_core.vocab import Role, Verdict

Say = Callable[[str], None]
#: Sources of candidates that fill slots while better ideas are being written.
FILLER_SOURCES = frozenset({"knob", "random"})
_SUBMIT_ORDER: dict[str, int] = {Role.CONFIRM: 0, Role.BASELINE: 1, Role.CANDIDATE: 2}


class Ledger:
    """The lab's experiments, thread-safe, with their records on ``main``."""

    def __init__(self, lab: Lab, say: Say = print, hooks: Hooks | None = None) -> None:
        self.lab = lab
        self.config = lab.config
        self.say = say
        self.hooks = hooks or Hooks(None, lab)
        self.code_paths = sorted({*self.config.files.editable, *self.config.files.protected})
        self._lock = threading.RLock()
        #: Set by the proposal pipeline while an LLM candidate is on its way (in memory only).
        self.fillers_held = False
        self._exps: dict[str, Experiment] = {e.id: e for e in lab.load_experiments()}
        self._unrecorded: dict[str, str] = {}
        self._code_cache: tuple[str, str] | None = None

    # -- reading -----------------------------------------------------------------------------
    def experiments(self) -> list[Experiment]:
        """Every experiment, in id order."""
        with self._lock:
            return sorted(self._exps.values(), key=lambda e: id_key(e.id))

    def get(self, exp_id: str) -> Experiment | None:
        with self._lock:
            return self._exps.get(exp_id)

    def running(self) -> list[Experiment]:
        """Experiments handed to the backend and not yet finished."""
        return [e for e in self.experiments()
                if e.status in (ExperimentStatus.SUBMITTED, ExperimentStatus.STARTED)]

    def ready(self) -> list[Experiment]:
        """Queued experiments with a commit, in submission order: confirm, baseline, then
        candidates, those of an LLM or a person before the knob explorer's (which only keep the
        slots busy meanwhile). While ``fillers_held`` (an LLM idea is being written into a
        candidate), the knob explorer's candidates wait, so the idea takes the next free slot."""
        queued = [e for e in self.experiments()
                  if e.status is ExperimentStatus.QUEUED and (e.commit or e.role == Role.CONFIRM)
                  and not (self.fillers_held and e.hypothesis.source in FILLER_SOURCES)]
        return sorted(queued, key=lambda e: (_SUBMIT_ORDER.get(e.role, 3),
                                             e.hypothesis.source in FILLER_SOURCES, id_key(e.id)))

    def spent_usd(self) -> float:
        return sum(e.cost_usd for e in self.experiments())

    def main_code(self) -> str:
        """The hash of main's code files (cached per main commit)."""
        main = self.lab.main_commit()
        cached = self._code_cache
        if cached is None or cached[0] != main:
            cached = self._code_cache = (main, self.lab.files_hash(main, self.code_paths))
        return cached[1]

    # -- writing -----------------------------------------------------------------------------
    def put(self, exp: Experiment) -> Experiment:
        """Save ``exp`` in the state directory (the live record) and keep it."""
        with self._lock:
            self.lab.save_experiment(exp)
            self._exps[exp.id] = exp
        return exp

    def new(self, hypothesis: Hypothesis, role: Role, seed: int = 0,
            parent: Experiment | None = None) -> Experiment:
        """A queued experiment on the current main (not saved yet)."""
        exp_id = self.lab.new_experiment_id()
        main = self.lab.main_commit()
        return Experiment(
            id=exp_id, hypothesis=hypothesis, base_commit=main,
            base_code=self.lab.files_hash(main, self.code_paths),
            branch="", role=role, seed=seed, parent=parent.id if parent else None,
        ).with_status(ExperimentStatus.QUEUED)

    def reject(self, exp: Experiment, reason: str) -> Experiment:
        """Refuse ``exp`` before it runs, and record why."""
        exp = attrs.evolve(exp, reason=reason, verdict=Verdict.REJECTED).with_status(
            ExperimentStatus.REJECTED, reason
        )
        self.put(exp)
        self.say(f"[yellow]rejected[/] {exp.id} {exp.hypothesis.title}: {reason}")
        self.record([exp], f"autolab: reject {exp.id}: {exp.hypothesis.title}\n\n{reason}")
        return exp

    # -- records on main ---------------------------------------------------------------------
    def record(self, exps: Sequence[Experiment], message: str) -> None:
        """Queue records for ``main``; :meth:`flush_records` commits them in one go.

        The live records are already in the state directory, so a crash before the flush
        loses nothing: :meth:`sync_records` commits whatever main is missing at the next start.
        """
        with self._lock:
            for exp in exps:
                self._unrecorded[exp.id] = message

    def flush_records(self) -> None:
        """Commit the queued records (and their LLM conversations) to ``main``."""
        with self._lock:
            pending, self._unrecorded = self._unrecorded, {}
            exps = [self._exps[i] for i in sorted(pending)]
        if not pending:
            return
        messages = list(dict.fromkeys(pending[i] for i in sorted(pending)))
        title = messages[0] if len(messages) == 1 else (
            f"autolab: record {len(exps)} experiments ({', '.join(e.id for e in exps)})")
        body = "" if len(messages) == 1 else "\n".join(m.splitlines()[0] for m in messages)
        extra: dict[str, str | None] = {}
        conv_dir = self.lab.state_dir / "conversations"
        for exp in exps:
            cid = exp.hypothesis.conversation_id
            if cid and (conv_dir / f"{cid}.json").exists():
                extra[f"{RECORDS}/conversations/{cid}.json"] = (conv_dir / f"{cid}.json").read_text()
        try:
            self.lab.record_on_main(exps, f"{title}\n\n{body}".strip(), extra_files=extra)
        except AutolabError as exc:
            self.say(f"[red]could not record {', '.join(e.id for e in exps)} on main: {exc}[/]")
            with self._lock:
                for exp_id, message in pending.items():
                    self._unrecorded.setdefault(exp_id, message)

    def sync_records(self) -> None:
        """Record on main every finished experiment whose record there is missing or old."""
        on_main = {r["id"]: r for r in self.lab.scores()}
        for exp in self.experiments():
            row = on_main.get(exp.id)
            if exp.done and (row is None or row.get("status") != exp.status.value
                             or (row.get("verdict") or None) != exp.verdict):
                self.record([exp], f"autolab: record {exp.id} ({exp.status.value})")
        self.flush_records()


def open_ledger(lab: Lab, say: Say = print, plugins: PluginManager | None = None) -> Ledger:
    """The lab's ledger with the installed plugins' lifecycle hooks, and nothing else (no
    backend, metric store or LLM): all that ``autolab approve`` needs with :mod:`promotion`."""
    return Ledger(lab, say=say, hooks=Hooks(plugins or get_plugin_manager(), lab))

"""Errors a user can act on, and a lab that survives what users do to it.

Pure helpers for the run loop (wired in by ``autolab/run/``):

- :class:`OutputTail` keeps the last lines a job printed (protocol lines left out) and
  :func:`failure_reason` turns "training exited with code 1" into a reason that shows the cause
  (``ModuleNotFoundError: No module named 'torch'``) and the last lines, secrets scrubbed.
- :func:`blocking_baseline_failures`: failed baselines of an unchanged ``main`` only stop the run
  when they failed in *this* run; earlier runs' failures stay in the records but are retried
  (the environment may have been fixed since).
- :func:`recover_state` rebuilds what a user may delete (``.autolab/``): it prunes worktree
  registrations whose folders are gone and restores experiment records from ``lab-records/`` on
  ``main``, returning one-line notes instead of raising.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Sequence

from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus
from autolab_core.secrets import scrub

_PROTOCOL = re.compile(r"^AUTOLAB_[A-Z]+ ")
_CAUSE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)|Killed|"
                    r"CUDA out of memory|Segmentation fault)\b.*")


class OutputTail:
    """The last ``n`` lines of a job's output, fed chunk by chunk, protocol lines left out."""

    def __init__(self, n: int = 12) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=n)
        self._partial = ""

    def feed(self, text: str) -> None:
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        self._lines.extend(line.rstrip("\r") for line in lines
                           if line.strip() and not _PROTOCOL.match(line))

    def lines(self) -> list[str]:
        extra = [self._partial] if self._partial.strip() and not _PROTOCOL.match(self._partial) else []
        return [*self._lines, *extra][-(self._lines.maxlen or 1):]


def cause(lines: Sequence[str]) -> str | None:
    """The line that names what went wrong (the last exception line), if any."""
    for line in reversed(lines):
        if _CAUSE.match(line):
            return line.strip()
    return None


def failure_reason(reason: str, lines: Sequence[str], show: int = 8,
                   secrets: Iterable[str] | None = None) -> str:
    """``reason`` with the cause and the last ``show`` output lines, for the console, ``status``
    and the record: ``training exited with code 1: ModuleNotFoundError: No module named 'torch'``
    then ``  | ...`` lines."""
    found = cause(lines)
    head = reason if not found or found in reason else f"{reason}: {found}"
    tail = [f"  | {line[:300]}" for line in lines[-show:]]
    text = "\n".join([head, *tail]) if tail else head
    return scrub(text, secrets)


def blocking_baseline_failures(experiments: Iterable[Experiment], code: str,
                               run_started: float) -> list[Experiment]:
    """Failed baselines of ``main``'s code ``code`` that failed during this run (after
    ``run_started``, a ``time.time()``). The loop stops with "main itself fails to run" only when
    these reach ``noise_runs``; failures from earlier runs are kept but do not block a retry."""
    out = []
    for exp in experiments:
        if exp.role != "baseline" or exp.base_code != code or exp.status is not ExperimentStatus.FAILED:
            continue
        failed_at = next((e.at for e in reversed(exp.history) if e.status is ExperimentStatus.FAILED),
                         None)
        if failed_at is not None and failed_at >= run_started:
            out.append(exp)
    return out


def recover_state(lab: Lab) -> list[str]:
    """Make the lab usable after ``.autolab/`` (or part of it) was deleted; one note per fix."""
    notes = []
    before = _registered_worktrees(lab)
    lab.repo.git.worktree("prune")
    gone = before - _registered_worktrees(lab)
    if gone:
        notes.append(f"pruned {len(gone)} worktree registration(s) whose folders were deleted")
    lab.experiments_dir.mkdir(parents=True, exist_ok=True)
    have = {p.stem for p in lab.experiments_dir.glob("*.json")}
    restored = 0
    for exp_id, text in _records_on_main(lab):
        if exp_id not in have:
            Experiment.from_dict(json.loads(text))  # only valid records come back
            (lab.experiments_dir / f"{exp_id}.json").write_text(text)
            restored += 1
    if restored:
        notes.append(f"rebuilt {restored} experiment record(s) in {lab.state_dir.name}/ from "
                     f"lab-records/ on main")
    return notes


def _registered_worktrees(lab: Lab) -> set[str]:
    text = lab.repo.git.worktree("list", "--porcelain")
    return {line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("worktree ")}


def _records_on_main(lab: Lab) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    try:
        tree = lab.repo.commit("main").tree / "lab-records" / "experiments"
    except KeyError:
        return out
    for blob in tree.blobs:
        if blob.name.endswith(".json"):
            out.append((blob.name[:-5], blob.data_stream.read().decode()))
    return out

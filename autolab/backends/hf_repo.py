"""The lab's code repo on the Hub: created private, refused when public, cleaned up.

Each experiment's code archive (``experiments/<label>.tar.gz``) is needed only until its job
has started; it is kept ``keep_code`` after the job finished (for a rerun or a look), then
deleted. :func:`clean` does that in one commit; ``autolab clean`` calls it on demand.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from autolab.backends import hf_code
from autolab_core.errors import BackendError


def ensure_private(api: Any, repo_id: str) -> None:
    """Create ``repo_id`` (a private dataset) if needed; refuse it if it is public."""
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    problem = public_problem(api, repo_id)
    if problem is not None:
        raise BackendError(f"hf-jobs: {problem}")


def public_problem(api: Any, repo_id: str) -> str | None:
    """The error for an existing *public* code repo; None when it is private or absent."""
    try:
        info = api.repo_info(repo_id, repo_type="dataset")
    except Exception as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return None
        raise
    if getattr(info, "private", False):
        return None
    return (f"the code repo {repo_id} is PUBLIC, and experiment code would be readable by anyone. "
            f"Make it private (https://huggingface.co/datasets/{repo_id}/settings) or set "
            "[backend.hf-jobs] code_repo to a new name (autolab creates it private)")


def code_files(api: Any, repo_id: str) -> list[str]:
    """The code archives in the repo (``experiments/*.tar.gz``)."""
    try:
        files = api.list_repo_files(repo_id, repo_type="dataset")
    except Exception as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return []
        raise
    return [f for f in files if f.startswith(f"{hf_code.CODE_DIR}/") and f.endswith(".tar.gz")]


def finished_labels(jobs: Iterable[Any], label_key: str, now: float,
                    older_than_s: float) -> tuple[set[str], set[str]]:
    """(labels whose every job ended ``older_than_s`` ago, every label that has a job)."""
    done: dict[str, float] = {}
    active: set[str] = set()
    for info in jobs:
        label = (info.labels or {}).get(label_key)
        if not label:
            continue
        stage = str(getattr(info.status.stage, "value", info.status.stage)).upper()
        if stage in ("SCHEDULING", "RUNNING") or info.finished_at is None:
            active.add(label)
            continue
        done[label] = max(done.get(label, 0.0), info.finished_at.timestamp())
    old = {label for label, at in done.items() if now - at >= older_than_s} - active
    return old, active | set(done)


def clean(api: Any, repo_id: str, jobs: Iterable[Any], label_key: str,
          older_than_s: float, *, orphans: bool = False) -> list[str]:
    """Delete the code archives of experiments whose jobs all ended ``older_than_s`` ago
    (and, with ``orphans``, archives with no job at all); return the deleted paths."""
    from huggingface_hub import CommitOperationDelete

    files = code_files(api, repo_id)
    if not files:
        return []
    old, seen = finished_labels(jobs, label_key, time.time(), older_than_s)
    doomed = []
    for path in files:
        label = path[len(hf_code.CODE_DIR) + 1: -len(".tar.gz")]
        if label in old or (orphans and label not in seen):
            doomed.append(path)
    if doomed:
        api.create_commit(repo_id, repo_type="dataset",
                          operations=[CommitOperationDelete(path_in_repo=p) for p in doomed],
                          commit_message=f"autolab: delete code of {len(doomed)} finished "
                                         "experiment(s)")
    return doomed

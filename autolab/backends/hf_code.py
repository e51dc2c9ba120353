"""How an experiment's code reaches an HF Jobs container, and the script the container runs.

The backend writes the experiment's commit into a ``git bundle`` and uploads it to a private
dataset repo of the lab (``<namespace>/autolab-<lab>-code``, path
``experiments/<experiment_id>.bundle``). The job's command is a short ``sh`` script
(:func:`job_script`) that runs the ``setup`` lines, downloads that bundle with
``hf_hub_download`` (authenticated by the ``HF_TOKEN`` job *secret*), checks out the exact
commit, drops ``HF_TOKEN`` from the environment unless the lab asked to keep it, and ``exec``\\ s
the experiment's command under ``timeout``. No token ever appears in the script.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autolab_core.errors import BackendError

#: Exit status of ``timeout`` when the time limit ran out (TERM sent).
TIMEOUT_EXIT = 124


def slug(text: str, limit: int = 63) -> str:
    """``text`` as Hub job names, labels and repo names accept it: ``[A-Za-z0-9_-]``.

    A text that had to change gets a short hash of the original, so two ids never share a slug.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"
    if cleaned == text and len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{cleaned[: limit - 9]}-{digest}"


def bundle_path(experiment_id: str) -> str:
    return f"experiments/{slug(experiment_id, 200)}.bundle"


def _git(workdir: str, *args: str) -> str:
    proc = subprocess.run(["git", "-C", workdir, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackendError(
            f"hf-jobs: `git {' '.join(args)}` failed in {workdir}: {proc.stderr.strip()}; the "
            "experiment's workdir must be a git checkout that contains its commit"
        )
    return proc.stdout.strip()


def make_bundle(workdir: str, commit: str, dest_dir: Path) -> tuple[Path, str]:
    """Write a bundle holding ``commit`` (and its history); return (file, ref inside it)."""
    full = _git(workdir, "rev-parse", "--verify", f"{commit}^{{commit}}")
    ref = f"refs/autolab-bundle/{uuid.uuid4().hex[:12]}"
    dest = dest_dir / f"{full[:12]}.bundle"
    _git(workdir, "update-ref", ref, full)
    try:
        _git(workdir, "bundle", "create", "-q", str(dest), ref)
    finally:
        _git(workdir, "update-ref", "-d", ref)
    return dest, ref


def upload_bundle(api: Any, repo_id: str, workdir: str, commit: str, experiment_id: str) -> str:
    """Bundle ``commit`` from ``workdir``, upload it to ``repo_id``; return the ref to fetch."""
    with tempfile.TemporaryDirectory(prefix="autolab-bundle-") as tmp:
        path, ref = make_bundle(workdir, commit, Path(tmp))
        api.upload_file(
            path_or_fileobj=str(path), path_in_repo=bundle_path(experiment_id), repo_id=repo_id,
            repo_type="dataset", commit_message=f"autolab: code of {experiment_id} ({commit[:12]})",
        )
    return ref


def job_script(
    command: Sequence[str],
    *,
    setup: Sequence[str],
    python: str,
    time_limit_s: float | None,
    code_repo: str | None = None,
    experiment_id: str = "",
    commit: str | None = None,
    ref: str | None = None,
    keep_token: bool = False,
) -> str:
    """The ``sh`` script a job runs. Without ``commit`` it runs ``command`` in an empty dir."""
    py = shlex.quote(python)
    lines = ["set -eu", 'cd "$(mktemp -d "${TMPDIR:-/tmp}/autolab.XXXXXX")"', *setup]
    if commit is not None:
        assert code_repo and ref, "code_repo and ref are needed to fetch a commit"
        download = (
            "from huggingface_hub import hf_hub_download; "
            f"hf_hub_download({json.dumps(code_repo)}, {json.dumps(bundle_path(experiment_id))}, "
            'repo_type="dataset", local_dir="code")'
        )
        lines += [
            f"{py} -c 'import huggingface_hub' 2>/dev/null || "
            f"{py} -m pip install --quiet 'huggingface_hub>=1.0'",
            "command -v git >/dev/null 2>&1 || "
            "(apt-get update -qq && apt-get install -y -qq git >/dev/null)",
            f"{py} -c {shlex.quote(download)}",
            "git init -q exp",
            f"git -C exp fetch -q ../code/{shlex.quote(bundle_path(experiment_id))} "
            f"{shlex.quote(ref)}",
            f"git -C exp -c advice.detachedHead=false checkout -q {shlex.quote(commit)}",
            "cd exp",
            f"echo '[autolab] checked out {commit}'",
        ]
    if not keep_token:
        lines.append("unset HF_TOKEN")
    limit = "" if not time_limit_s else f"timeout -k 30 {math.ceil(time_limit_s)} "
    lines.append(f"exec {limit}{shlex.join(command)}")
    return "\n".join(lines)

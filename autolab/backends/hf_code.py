"""How an experiment's code reaches an HF Jobs container, and the script the container runs.

The backend packs the experiment's *tree* at its commit (``git archive``: files only, no
history, so nothing committed once and deleted later travels) together with autolab's own
job runtime (the ``autolab_core`` package's ``.py`` files, standard library only, under
``.autolab-runtime/``) into one ``tar.gz``, and uploads it to the lab's private dataset repo
(``<namespace>/autolab-<lab>-code``, path ``experiments/<label>.tar.gz``).

The job's command is a short ``sh`` script (:func:`job_script`): it downloads that archive with
the standard library (authenticated by the ``HF_TOKEN`` job *secret*, pinned to the upload's
commit), unpacks it, installs the lab's declared requirements (and nothing of autolab's), puts
``.autolab-runtime`` on ``PYTHONPATH``, and runs the experiment's command without ``HF_TOKEN``
in its environment. Afterwards it uploads the run's output directory (see
:mod:`autolab.backends.hf_artifacts`). No token ever appears in the script.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import shlex
import subprocess
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import autolab_core
from autolab.backends import hf_artifacts
from autolab_core.errors import BackendError

#: Exit status of ``timeout`` when the time limit ran out (TERM sent).
TIMEOUT_EXIT = 124
#: Where autolab's job runtime sits inside the unpacked code.
RUNTIME_DIR = ".autolab-runtime"
#: Folders of the code repo: code archives and artifacts.
CODE_DIR, ARTIFACTS_DIR = "experiments", "artifacts"

#: Standard-library download of the code archive: follows the Hub's redirects but never sends
#: the token to another host (signed storage URLs reject a second credential).
FETCH = """\
import os, sys, tarfile, urllib.parse as up, urllib.request as ur
class Redirect(ur.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and up.urlsplit(newurl).netloc != up.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new
endpoint, repo, revision, path = sys.argv[1:5]
url = f"{endpoint}/datasets/{repo}/resolve/{revision}/{path}"
req = ur.Request(url, headers={"Authorization": "Bearer " + os.environ["HF_TOKEN"]})
with ur.build_opener(Redirect).open(req, timeout=600) as resp:
    with tarfile.open(fileobj=resp, mode="r|gz") as tar:
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall("exp", **extra)
"""


def slug(text: str, limit: int = 63) -> str:
    """``text`` as Hub job names, labels and repo names accept it: ``[A-Za-z0-9_-]``.

    A text that had to change gets a short hash of the original, so two ids never share a slug.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"
    if cleaned == text and len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{cleaned[: limit - 9]}-{digest}"


def code_path(experiment_id: str) -> str:
    """Where an experiment's code archive lives in the code repo (named by its job label)."""
    return f"{CODE_DIR}/{slug(experiment_id)}.tar.gz"


def artifacts_path(experiment_id: str) -> str:
    return f"{ARTIFACTS_DIR}/{slug(experiment_id)}"


def _git(workdir: str, *args: str) -> bytes:
    proc = subprocess.run(["git", "-C", workdir, *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise BackendError(
            f"hf-jobs: `git {' '.join(args)}` failed in {workdir}: "
            f"{proc.stderr.decode(errors='replace').strip()}; the experiment's workdir must be a "
            "git checkout that contains its commit"
        )
    return proc.stdout


def runtime_files() -> dict[str, bytes]:
    """``autolab_core``'s ``.py`` files, keyed by their path inside the archive."""
    package = Path(autolab_core.__file__).resolve().parent
    return {f"{RUNTIME_DIR}/autolab_core/{p.name}": p.read_bytes()
            for p in sorted(package.glob("*.py"))} | {
        f"{RUNTIME_DIR}/{hf_artifacts.SCRIPT_NAME}": hf_artifacts.source().encode()}


def make_archive(workdir: str, commit: str, dest: Path) -> Path:
    """Write ``dest`` (``tar.gz``): the tree of ``commit`` (no history) plus the job runtime."""
    full = _git(workdir, "rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
    tree = _git(workdir, "archive", "--format=tar", full)
    mtime = time.time()
    with tarfile.open(fileobj=io.BytesIO(tree), mode="r:") as src, \
            tarfile.open(dest, mode="w:gz") as out:
        for member in src:
            if member.name.startswith(RUNTIME_DIR):
                continue  # the lab cannot bring its own runtime
            data = src.extractfile(member) if member.isfile() else None
            out.addfile(member, data)
        for name, content in runtime_files().items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), int(mtime), 0o644
            out.addfile(info, io.BytesIO(content))
    return dest


_INLINE = re.compile(r"(?m)^# /// script$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


def inline_requirements(workdir: str, commit: str, argv: Sequence[str]) -> list[str]:
    """The ``dependencies`` of the inline script metadata (PEP 723, as ``uv run`` reads it) of
    the first ``.py`` file in ``argv``, read from ``commit``; ``[]`` when there is none."""
    script = next((a for a in argv if a.endswith(".py")), None)
    if script is None or script.startswith("/"):
        return []
    proc = subprocess.run(["git", "-C", workdir, "show", f"{commit}:{script}"],
                          capture_output=True, text=True, check=False)
    match = _INLINE.search(proc.stdout) if proc.returncode == 0 else None
    if match is None:
        return []
    content = "".join(line[2:] if line.startswith("# ") else line[1:]
                      for line in match.group("content").splitlines(keepends=True))
    try:
        deps = tomllib.loads(content).get("dependencies", [])
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"hf-jobs: the `# /// script` block of {script} is not valid TOML: "
                           f"{exc}") from exc
    return [str(d) for d in deps]


def upload_code(api: Any, repo_id: str, workdir: str, commit: str, experiment_id: str) -> str:
    """Archive ``commit`` from ``workdir`` and upload it; return the repo commit to fetch."""
    with tempfile.TemporaryDirectory(prefix="autolab-code-") as tmp:
        path = make_archive(workdir, commit, Path(tmp) / "code.tar.gz")
        info = api.upload_file(
            path_or_fileobj=str(path), path_in_repo=code_path(experiment_id), repo_id=repo_id,
            repo_type="dataset", commit_message=f"autolab: code of {experiment_id} ({commit[:12]})",
        )
    return str(getattr(info, "oid", None) or "main")


def job_script(
    command: Sequence[str],
    *,
    setup: Sequence[str],
    python: str,
    time_limit_s: float | None,
    endpoint: str = "https://huggingface.co",
    code_repo: str | None = None,
    experiment_id: str = "",
    revision: str = "main",
    commit: str | None = None,
    requirements: Sequence[str] = (),
    install_requirements_txt: bool = True,
    artifacts: bool = True,
    keep_token: bool = False,
) -> str:
    """The ``sh`` script a job runs. Without ``code_repo`` it runs ``command`` in an empty dir."""
    py = shlex.quote(python)
    lines = ["set -eu", 'cd "$(mktemp -d "${TMPDIR:-/tmp}/autolab.XXXXXX")"', *setup]
    if code_repo is not None:
        args = shlex.join([endpoint.rstrip("/"), code_repo, revision, code_path(experiment_id)])
        lines += [f"{py} -c {shlex.quote(FETCH)} {args}", "cd exp",
                  f"echo '[autolab] checked out {commit or revision} (tree only, no history)'"]
        if install_requirements_txt:
            lines.append(f"if [ -f requirements.txt ]; then {py} -m pip install --quiet "
                         "--disable-pip-version-check -r requirements.txt; fi")
        lines.append(f'export PYTHONPATH="$PWD/{RUNTIME_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"')
    if requirements:
        lines.append(f"{py} -m pip install --quiet --disable-pip-version-check "
                     f"{shlex.join(requirements)}")
    limit = "" if not time_limit_s else f"timeout -k 30 {math.ceil(time_limit_s)} "
    drop = "" if keep_token else "env -u HF_TOKEN "
    run = f"{drop}{limit}{shlex.join(command)}"
    if code_repo is None or not artifacts:
        lines.append(f"exec {run}")
        return "\n".join(lines)
    upload = shlex.join([python, f"{RUNTIME_DIR}/{hf_artifacts.SCRIPT_NAME}",
                         endpoint.rstrip("/"), code_repo, artifacts_path(experiment_id)])
    lines += [
        "set +e",
        f"{run} &",
        "child=$!",
        "trap 'kill -TERM $child 2>/dev/null; wait $child; exit 143' TERM INT",
        "wait $child",
        "code=$?",
        f'AUTOLAB_OUTPUT_DIR="${{AUTOLAB_OUTPUT_DIR:-$PWD/.autolab-out}}" {upload} || '
        "echo '[autolab] artifacts were not uploaded'",
        'exit "$code"',
    ]
    return "\n".join(lines)

"""Checks of a patched candidate before it is queued.

- :func:`autolab.agents.edits.validate_patch` (called by the proposal pipeline for every
  backend) never executes the patch: editable files only, a real change, a size limit, and a
  compile check of every edited Python file.
- :func:`smoke_run_here` runs the patched training command briefly on this machine. It runs
  only when the backend itself runs jobs here (``JobBackend.runs_on_this_machine``) and
  ``[search] smoke = "always"``: a login node or laptop never trains a candidate that is
  meant for a cluster or a cloud service.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from autolab.seed_check import seed_env, seeded_argv
from autolab_core.config import Config
from autolab_core.lab import Lab
from autolab_core.models import Experiment

#: ``smoke(exp, commit) -> None`` when the candidate may be queued, else why not.
SmokeCheck = Callable[[Experiment, str], "str | None"]


def should_run_here(config: Config, runs_on_this_machine: bool) -> bool:
    """Whether candidates get a short training run on this machine before they are queued."""
    return runs_on_this_machine and config.search.smoke == "always"


def smoke_run_here(lab: Lab, exp: Experiment, commit: str) -> str | None:
    """Run ``commit``'s training command here for ``[search] smoke_seconds``; None if it passes."""
    from autolab.agents.edits import smoke_run

    config = lab.config
    search = config.search
    path = lab.state_dir / "smoke" / exp.id
    lab.export_tree(commit, path)  # no .git: the patch cannot move the lab's refs
    try:
        out = path / ".autolab-out"
        out.mkdir(exist_ok=True)
        env = {**seed_env(0, config.run.seed_env), "AUTOLAB_OUTPUT_DIR": str(out),
               "PATH": os.pathsep.join([config.run.python_dir(), os.environ.get("PATH", "")]),
               "GIT_CEILING_DIRECTORIES": str(path.parent), **config.run.env, **search.smoke_env}
        result = smoke_run(path, seeded_argv(config.run.argv(), 0), env, search.smoke_seconds)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return None if result.ok else f"smoke run failed: {result.reason}"


def smoke_check(lab: Lab, runs_on_this_machine: bool) -> SmokeCheck:
    """The pre-queue check for a backend: a local smoke run, or nothing that executes the patch."""
    if should_run_here(lab.config, runs_on_this_machine):
        return lambda exp, commit: smoke_run_here(lab, exp, commit)
    return lambda exp, commit: None

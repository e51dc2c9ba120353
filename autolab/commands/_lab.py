"""Shared by the commands: open a lab and make its configured backend."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from autolab.commands.distribution import ensure_no_unrelated_autolab

LAB_OPTION = click.option(
    "--lab", "lab_dir", type=click.Path(file_okay=False, path_type=Path), default=".",
    show_default=True, help="The lab repository.",
)


def fail(message: str) -> None:
    click.echo(f"autolab: error: {message}", err=True)
    sys.exit(2)


def lab_and_backend(lab_dir: Path) -> tuple[Any, Any]:
    """``(Lab, backend)`` for ``lab_dir``; exits with a clear message when either fails."""
    from autolab_core.errors import AutolabError
    from autolab_core.lab import Lab
    from autolab_core.plugins import get_plugin_manager, lab_context, make_plugin

    try:
        ensure_no_unrelated_autolab()
        lab = Lab(lab_dir)
        name = lab.config.backend
        backend = make_plugin(get_plugin_manager(), "backend", name,
                              lab.config.backend_table(name), lab_context(lab))
        return lab, backend
    except AutolabError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits

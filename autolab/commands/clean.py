"""``autolab clean``: delete the code archives that cloud backends keep for finished jobs.

Backends that upload code (``hf-jobs``) delete an experiment's archive ``keep_code`` after its
job ended, at the end of each ``autolab run``; this command does it on demand.
"""

from __future__ import annotations

from pathlib import Path

import click

from autolab.commands._lab import LAB_OPTION, fail, lab_and_backend


@click.command()
@LAB_OPTION
@click.option("--older-than", default=None,
              help="Only archives of jobs that ended this long ago, e.g. 2d (default: the "
                   "backend's keep_code).")
@click.option("--all", "everything", is_flag=True,
              help="Every finished job's archive, and archives no job refers to.")
def clean(lab_dir: Path, older_than: str | None, everything: bool) -> None:
    """Delete uploaded code of finished experiments from the backend's storage."""
    from autolab_core.config import parse_duration
    from autolab_core.errors import AutolabError

    _, backend = lab_and_backend(lab_dir)
    cleaner = getattr(backend, "clean_code", None)
    if not callable(cleaner):
        click.echo(f"backend {backend.name!r} keeps no uploaded code: nothing to clean")
        return
    try:
        limit = 0.0 if everything else (
            None if older_than is None else parse_duration(older_than, "--older-than"))
        deleted = cleaner(limit, orphans=everything)
    except AutolabError as exc:
        fail(str(exc))
        return
    finally:
        backend.close()
    click.echo(f"deleted {len(deleted)} code archive(s)" +
               "".join(f"\n  {path}" for path in deleted))

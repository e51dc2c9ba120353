"""``autolab cancel``: stop a lab's jobs on its backend (``--all``, or named experiments)."""

from __future__ import annotations

from pathlib import Path

import click

from autolab.commands._lab import LAB_OPTION, fail, lab_and_backend


@click.command()
@LAB_OPTION
@click.option("--all", "everything", is_flag=True,
              help="Cancel every job of this lab that is still scheduled or running.")
@click.argument("experiments", nargs=-1)
def cancel(lab_dir: Path, everything: bool, experiments: tuple[str, ...]) -> None:
    """Cancel jobs: `autolab cancel --all`, or `autolab cancel EXPERIMENT...`."""
    from autolab_core.errors import AutolabError
    from autolab_core.models import ExperimentStatus

    if not everything and not experiments:
        fail("name the experiments to cancel, or pass --all")
    lab, backend = lab_and_backend(lab_dir)
    cancelled: list[str] = []
    try:
        if everything and callable(getattr(backend, "cancel_all", None)):
            cancelled += [f"job {job_id}" for job_id in backend.cancel_all()]
        active = (ExperimentStatus.SUBMITTED, ExperimentStatus.STARTED)
        for exp in lab.load_experiments():
            wanted = exp.id in experiments or (everything and exp.status in active)
            if wanted and exp.handle is not None and exp.status in active:
                backend.cancel(exp.handle)
                cancelled.append(f"{exp.id} (job {exp.handle.job_id})")
            elif exp.id in experiments:
                click.echo(f"{exp.id}: not running ({exp.status.value}), nothing to cancel")
    except AutolabError as exc:
        fail(str(exc))
    finally:
        backend.close()
    unknown = set(experiments) - {e.id for e in lab.load_experiments()}
    if unknown:
        fail(f"no such experiment(s): {', '.join(sorted(unknown))}")
    click.echo(f"cancelled {len(cancelled)}: {', '.join(cancelled)}" if cancelled
               else "nothing was running")

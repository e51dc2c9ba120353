"""``autolab cost``: what one experiment's job may cost on the lab's backend, before any runs.

Prices a job exactly as ``autolab run`` will before submitting it (``estimate_cost``: the
flavor's price for the whole Hub-side limit, by the minute) and says how many such jobs
``[budget] usd`` pays for. Nothing is submitted or uploaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from autolab.commands._lab import LAB_OPTION, fail, lab_and_backend


@click.command()
@LAB_OPTION
@click.option("--flavor", default=None, help="Price this flavor instead of the lab's default.")
def cost(lab_dir: Path, flavor: str | None) -> None:
    """Show the most one experiment's job can cost, and how many the budget pays for."""
    from autolab_core.errors import AutolabError
    from autolab_core.models import JobSpec

    lab, backend = lab_and_backend(lab_dir)
    config = lab.config
    spec = JobSpec(experiment_id="cost-estimate", command=("python", "-m", "autolab_core.runner"),
                   workdir=str(lab.root), time_limit_s=config.run.time_limit,
                   resources={"flavor": flavor} if flavor else {})
    try:
        estimate = backend.estimate_cost(spec)
    except AutolabError as exc:
        fail(str(exc))
        return
    finally:
        backend.close()
    if estimate is None:
        click.echo(f"backend {backend.name!r} does not charge per job")
        return
    name = flavor or getattr(getattr(backend, "opts", None), "flavor", "")
    click.echo(f"one experiment on {backend.name} {name}: at most ${estimate:.2f} "
               "(its whole time limit plus setup, billed by the minute)")
    budget = config.budget.usd
    if budget is None:
        click.echo("no [budget] usd is set: autolab will not stop on money; set one")
    else:
        jobs = math.floor(budget / estimate) if estimate > 0 else None
        click.echo(f"[budget] usd = {budget:.2f} pays for at least {jobs} such job(s); a job "
                   "that could cross it is never submitted")

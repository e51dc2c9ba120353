"""The ``autolab`` command line. Imports stay inside commands so ``--help`` is instant."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from autolab.commands import cancel, clean, cost
from autolab.commands._lab import LAB_OPTION
from autolab.commands._lab import fail as _fail


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autolab-ml")
def main() -> None:
    """autolab: run ML research experiments autonomously on the compute you already have.

    \b
    Quick start (no GPU, no network, about 10 minutes on 2 cores):
      autolab demo
    Your own lab:
      autolab init path/to/repo   # then edit autolab.toml
      autolab run --lab path/to/repo --workers 2 --time 8h
    """
    from autolab.commands.distribution import ensure_no_unrelated_autolab
    from autolab_core.errors import AutolabError

    try:
        ensure_no_unrelated_autolab()
    except AutolabError as exc:
        _fail(str(exc))


main.add_command(cancel.cancel)
main.add_command(clean.clean)
main.add_command(cost.cost)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--probe", is_flag=True,
              help="Run the training once (briefly) to propose the metric from what it prints.")
@click.option("--probe-time", default="60s", show_default=True,
              help="Stop the probe run after this long, e.g. 90s or 5m.")
@click.option("--command", "command", default=None,
              help='The training command, if not the one found (e.g. "python train.py --fast").')
def init(directory: Path, probe: bool, probe_time: str, command: str | None) -> None:
    """Look at DIRECTORY (your repository), propose a commented autolab.toml and commit it.

    It finds the training entry point, its config files and their knobs; with --probe it runs
    the training once and proposes the metric pattern from the printed lines. Files that look
    like secrets, large files and what the probe wrote are never committed.
    """
    from autolab.lab_init import init_lab
    from autolab_core.config import parse_duration
    from autolab_core.errors import AutolabError

    try:
        seconds = parse_duration(probe_time, "--probe-time")
        lab = init_lab(directory, command=command, run_probe=probe, probe_seconds=seconds,
                       say=click.echo)
    except AutolabError as exc:
        _fail(str(exc))
    click.echo(f"lab ready at {lab.root} (main {lab.main_commit()[:12]}); check autolab.toml, "
               f"then: autolab run --lab {directory} -n 3")


@main.command()
def plugins() -> None:
    """List installed plugins: name, kind, distribution, version, and whether they can run."""
    import warnings

    from rich.table import Table

    from autolab_core.plugins import PluginWarning, get_plugin_manager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # listed below the table instead
        pm = get_plugin_manager()
        pm.registry  # noqa: B018 - collect registrations inside the filter
    table = Table("name", "kind", "distribution", "version", "available")
    for info in pm.all():
        reason = info.available()
        table.add_row(info.name, info.kind.replace("_", " "), info.distribution, info.version,
                      "yes" if reason is None else f"no: {reason}")
    console = _console()
    console.print(table)
    for failure in pm.failures:
        console.print(f"[yellow]warning:[/] {failure}")


def _run_lab(lab_dir: Path, cli: dict[str, Any], defaults: dict[str, Any] | None = None
             ) -> list[Any]:
    """Resolve the settings (command line over autolab.toml over defaults), print them with
    their sources, run the loop, and print the end-of-run summary."""
    from autolab.reporting.console import print_summary
    from autolab.run.assemble import build_loop
    from autolab.run.settings import resolve
    from autolab_core.lab import Lab

    console = _console()
    started = time.time()
    lab = Lab(lab_dir)
    settings = resolve(lab.config, defaults=defaults, **cli)
    loop = build_loop(lab, settings.options(), say=console.print,
                      strategy=settings.strategy.value)
    console.print(f"[bold]autolab run[/] {lab.root}: metric {lab.config.metric.name} "
                  f"({lab.config.metric.direction}), {loop.capacity} slot(s)")
    for line in settings.header(loop.capacity, loop.backend.capacity is not None):
        console.print(line, markup=False)
    if console.is_terminal:
        from rich.live import Live

        from autolab.reporting.console import live_table

        with Live(get_renderable=lambda: live_table(loop), console=console,
                  refresh_per_second=1, transient=True):
            experiments = loop.run()
    else:
        experiments = loop.run()
    print_summary(lab, experiments, console, since=started)
    return experiments


RUN_OPTIONS = [
    click.option("--workers", "-w", type=click.IntRange(1), default=None,
                 help="Parallel jobs (local slots) [default: [backend.<name>] workers in "
                      "autolab.toml, else the backend's own, else 1]."),
    click.option("--max-experiments", "-n", type=click.IntRange(1), default=None,
                 help="Stop after starting this many candidate experiments."),
    click.option("--time", "time_limit", default=None,
                 help="Stop submitting after this long, e.g. 30m or 8h."),
    click.option("--on-stop", type=click.Choice(["finish", "cancel", "detach"]),
                 default=None, help="What happens to running jobs when the run stops "
                                    "[default: finish]."),
    click.option("--strategy", type=click.Choice(["auto", "knob", "llm", "random"]),
                 default=None, help="Override [search] strategy."),
]


def _with_run_options(f: Any) -> Any:
    for option in reversed(RUN_OPTIONS):
        f = option(f)
    return f


@main.command()
@LAB_OPTION
@_with_run_options
def run(lab_dir: Path, workers: int | None, max_experiments: int | None,
        time_limit: str | None, on_stop: str | None, strategy: str | None) -> None:
    """Run the lab: calibrate noise, propose, run and judge experiments, promote wins."""
    from autolab_core.errors import AutolabError

    cli = {"workers": workers, "max_experiments": max_experiments, "time_limit": time_limit,
           "on_stop": on_stop, "strategy": strategy}
    try:
        _run_lab(lab_dir, cli)
    except AutolabError as exc:
        _fail(str(exc))


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path),
                default=Path("autolab-demo"))
@_with_run_options
def demo(directory: Path, workers: int | None, max_experiments: int | None,
         time_limit: str | None, on_stop: str | None, strategy: str | None) -> None:
    """Create the reference CPU lab in DIRECTORY and run a bounded session on it.

    The lab trains a tiny byte-level GPT on Shakespeare and scores it in validation
    bits per byte. Its init std is GPT-2's 0.02, which leaves a known win to find.
    """
    from autolab.training import create_reference_lab
    from autolab_core.errors import AutolabError
    from autolab_core.lab import Lab

    if directory.exists() and any(directory.iterdir()) and not (directory / ".git").exists():
        _fail(f"{directory} exists and is not a lab; choose another directory")
    if not (directory / ".git").exists():
        create_reference_lab(directory)
        Lab.init(directory)
    cli = {"workers": workers, "max_experiments": max_experiments, "time_limit": time_limit,
           "on_stop": on_stop, "strategy": strategy}
    try:
        _run_lab(directory, cli, defaults={"workers": 2, "max_experiments": 8, "time_limit": "12m"})
    except AutolabError as exc:
        _fail(str(exc))
    click.echo(f"\nThe lab is in {directory}: `git -C {directory} log main` shows the promotions, "
               f"`git -C {directory} branch` the experiments, {directory}/lab-records/scores.tsv "
               f"every result.")


@main.command(name="try", context_settings={"ignore_unknown_options": True})
@LAB_OPTION
@click.argument("changes", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--title", default=None, help="What the idea is, in words.")
@click.option("--flavor", default=None, help="Machine type for this idea's runs (hf-jobs), "
              "e.g. a10g-small; its cost estimate uses that flavor's price.")
@click.option("--gpus", type=int, default=None, help="GPUs for this idea's runs (SLURM).")
@click.option("--memory", default=None, help="Memory for this idea's runs, e.g. 64G (SLURM).")
def try_(lab_dir: Path, changes: tuple[str, ...], title: str | None, flavor: str | None = None,
         gpus: int | None = None, memory: str | None = None) -> None:
    """Queue your own idea, e.g. `autolab try learning_rate=0.002 model.n_layer=4`.

    Names are the knobs of the editable files: module-level names of any case, argparse
    flags or their dest (--lr, lr), dotted config keys (model.n_layer), Class.field. The next
    `autolab run` picks the idea up.
    """
    import json
    import uuid

    from autolab.try_idea import parse_changes, parse_resources
    from autolab_core.errors import AutolabError
    from autolab_core.lab import Lab
    from autolab_core.models import Hypothesis, to_dict

    try:
        lab = Lab(lab_dir)
        parsed = parse_changes(lab, changes)
        resources = parse_resources(flavor, gpus, memory)
    except AutolabError as exc:
        _fail(str(exc))
    h = Hypothesis(id=f"user-{uuid.uuid4().hex[:8]}", source="user", changes=parsed,
                   title=title or ", ".join(f"{k} -> {v!r}" for k, v in parsed.items()),
                   resources=resources)
    with open(lab.state_dir / "inbox.jsonl", "a") as fh:
        fh.write(json.dumps(to_dict(h)) + "\n")
    click.echo(f"queued: {h.title}")


@main.command()
@LAB_OPTION
@click.argument("experiment")
def approve(lab_dir: Path, experiment: str) -> None:
    """Promote EXPERIMENT, a winning candidate held back by an anomaly flag, after review."""
    import getpass

    from autolab.agents.knobs import compute_kind
    from autolab.run.ledger import open_ledger
    from autolab.run.promotion import Promotion
    from autolab_core.errors import AutolabError
    from autolab_core.lab import Lab

    console = _console()
    try:
        lab = Lab(lab_dir)
        with lab.exclusive("orchestrator", "an `autolab run`"):
            ledger = open_ledger(lab, say=console.print)
            exp = Promotion(ledger, compute_kind=compute_kind).approve(
                experiment, getpass.getuser())
    except AutolabError as exc:
        _fail(str(exc))
    console.print(f"{exp.id}: {exp.verdict} ({exp.reason})")


@main.command()
@LAB_OPTION
def status(lab_dir: Path) -> None:
    """Running jobs, the queue, the best result, budgets and anomalies."""
    from autolab.reporting.console import print_status
    from autolab_core.lab import Lab

    print_status(Lab(lab_dir), _console())


@main.command()
@LAB_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write report.md, report.html and PNG charts "
                   "(default: <lab>/.autolab/report).")
def report(lab_dir: Path, out: Path | None) -> None:
    """Write the Markdown and HTML report with leaderboard, curves and Gantt chart."""
    from autolab.reporting.console import write_report
    from autolab_core.lab import Lab

    lab = Lab(lab_dir)
    paths = write_report(lab, out or lab.state_dir / "report")
    for path in paths:
        click.echo(str(path))


@main.group()
def skills() -> None:
    """The prompts of the LLM roles (SKILL.md files)."""


def _add_skills_check() -> None:
    try:
        from autolab.agents.skills import skills_check
    except ImportError:  # pragma: no cover - the module ships with autolab
        return
    skills.add_command(skills_check, name="check")


_add_skills_check()


if __name__ == "__main__":
    main()

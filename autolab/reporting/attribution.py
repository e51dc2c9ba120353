"""Gain attribution: how much of main's total gain each promoted change still carries.

For every promoted knob change ``K: a -> b`` that the final main still has (``K = b``), the
*ablation* is the final main with ``K`` set back to ``a``. Its code hash is computed here; runs
of that exact code (an ablation queued with ``autolab report --attribution --queue``, run by the
next ``autolab run`` with the gate's seeds, or older runs of the same code such as the main
before the last promotion) give its mean. The change *carries* ``improvement(main, ablation)``:
what the final main loses without it, shown with its standard error and as a share of the
total gain (final main against the first main). Shares that add up to more or less than 100%
mean the changes interact.

Changes that cannot be ablated this way are listed with the reason: a later change of the same
knob superseded them, or they are code edits (an LLM patch), whose revert this module does not
write.
"""

from __future__ import annotations

import json
import math
import statistics
import uuid
from collections.abc import Sequence
from pathlib import Path

import attrs

from autolab.agents.knobs import KnobExplorer, format_value, resolve
from autolab.run import gate
from autolab_core.errors import PatchError
from autolab_core.hashing import content_hash
from autolab_core.lab import Lab
from autolab_core.models import Experiment, ExperimentStatus, Hypothesis, to_dict
from autolab_core.vocab import Role, Verdict


@attrs.frozen
class Ablation:
    """One promoted change and what the final main loses without it."""

    experiment: str  # the promoted candidate
    title: str
    knob: str = ""
    revert_to: str = ""
    code_hash: str = ""
    runs: int = 0
    carried: float | None = None  # improvement of main over the ablation; None until it ran
    carried_err: float | None = None
    share: float | None = None  # carried / total gain
    note: str = ""

    def hypothesis(self) -> Hypothesis:
        """The ablation as an idea for the run loop (the knob back at its old value)."""
        return Hypothesis(
            id=f"ablation-{uuid.uuid4().hex[:8]}", source="ablation",
            title=f"ablation of {self.experiment}: {self.knob} back to {self.revert_to}",
            rationale=f"how much of main's gain {self.experiment} ({self.title}) still carries",
            changes={self.knob: _parse(self.revert_to)},
        )


@attrs.frozen
class Attribution:
    metric: str
    main_mean: float | None
    first_mean: float | None
    total_gain: float | None
    rows: tuple[Ablation, ...]


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip("'\"")


def runs_of_code(experiments: Sequence[Experiment], code: str) -> list[float]:
    """Finished values of every run of exactly this code (baselines, candidates, confirms)."""
    out = []
    for e in experiments:
        if e.status is not ExperimentStatus.FINISHED or e.result is None:
            continue
        same = e.base_code == code if e.role == Role.BASELINE else e.code_hash == code
        if same:
            out.append(e.result.value)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def attribute(lab: Lab) -> Attribution:
    """The attribution table of ``lab``'s current main, from its records."""
    config = lab.config
    exps = lab.load_experiments()
    main = lab.main_commit()
    code_paths = sorted({*config.files.editable, *config.files.protected})
    main_files = lab.files_at(main, code_paths)
    main_code = lab.files_hash(main, code_paths)
    main_values = runs_of_code(exps, main_code) or gate.values(gate.main_runs(exps, main_code))
    first = next((e.base_code for e in exps if e.role == Role.BASELINE and e.base_code), None)
    first_mean = _mean(runs_of_code(exps, first)) if first else None
    main_mean = _mean(main_values)
    direction = config.metric.dir
    total = (direction.improvement(main_mean, first_mean)
             if main_mean is not None and first_mean is not None else None)
    sigma = gate.pooled_sigma(exps, config.promotion.min_sigma) or 0.0
    explorer = KnobExplorer(editable=config.files.editable, command=config.run.argv())
    knobs = explorer.knobs_all({p: main_files[p] for p in config.files.editable if p in main_files})
    rows = []
    for exp in exps:
        if exp.role != Role.CANDIDATE or exp.verdict != Verdict.PROMOTED:
            continue
        title = exp.hypothesis.title
        if len(exp.hypothesis.changes) != 1:
            rows.append(Ablation(exp.id, title, note="not a single knob change: no automatic revert"))
            continue
        (name, after), = exp.hypothesis.changes.items()
        try:
            base = lab.files_at(exp.base_commit, config.files.editable)
            before = resolve(name, explorer.knobs_all(base)).value
            knob = resolve(name, knobs)
        except PatchError:
            rows.append(Ablation(exp.id, title, knob=name, note="knob no longer on main"))
            continue
        if format_value(knob.value) != format_value(after):
            rows.append(Ablation(exp.id, title, knob=name, note="superseded by a later change"))
            continue
        ablated = Hypothesis(id="ablation", title="", changes={name: before})
        edited = explorer.write_patch(ablated, main_files)
        code = content_hash({**main_files, **edited, **{p: "" for p in code_paths if p not in main_files}})
        values = runs_of_code(exps, code)
        row = Ablation(exp.id, title, knob=name, revert_to=format_value(before), code_hash=code,
                       runs=len(values), note="" if values else "no ablation run yet")
        if values and main_mean is not None:
            carried = direction.improvement(main_mean, statistics.fmean(values))
            err = sigma * math.sqrt(1 / len(values) + 1 / max(1, len(main_values)))
            share = carried / total if total else None
            row = attrs.evolve(row, carried=carried, carried_err=err, share=share)
        rows.append(row)
    return Attribution(config.metric.name, main_mean, first_mean, total, tuple(rows))


def queue_ablations(lab: Lab, attribution: Attribution) -> list[Hypothesis]:
    """Put every ablation that has no run yet in the inbox the next ``autolab run`` reads."""
    wanted = [row.hypothesis() for row in attribution.rows if row.code_hash and not row.runs]
    if wanted:
        with open(lab.state_dir / "inbox.jsonl", "a") as fh:
            for h in wanted:
                fh.write(json.dumps(to_dict(h)) + "\n")
    return wanted


def render_markdown(attribution: Attribution) -> str:
    """The attribution table as Markdown."""
    def num(x: float | None, fmt: str = ".4f") -> str:
        return "n/a" if x is None else format(x, fmt)

    lines = [
        f"## Gain attribution ({attribution.metric})",
        "",
        f"First main {num(attribution.first_mean)}, final main {num(attribution.main_mean)}, "
        f"total gain {num(attribution.total_gain)}.",
        "",
        "| promoted | change | ablation | runs | carried | share | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in attribution.rows:
        ablation = f"{r.knob} = {r.revert_to}" if r.revert_to else ""
        carried = "" if r.carried is None else f"{r.carried:+.4f} ± {r.carried_err or 0:.4f}"
        share = "" if r.share is None else f"{100 * r.share:.0f}%"
        lines.append(f"| {r.experiment} | {r.title} | {ablation} | {r.runs} | {carried} | {share} "
                     f"| {r.note} |")
    if not attribution.rows:
        lines.append("| | no promoted change yet | | | | | |")
    return "\n".join(lines) + "\n"


def write_attribution(lab: Lab, out: Path, queue: bool = False) -> tuple[Path, Attribution, list[Hypothesis]]:
    """``autolab report --attribution``: attribution.md in ``out`` (and the ablations queued)."""
    attribution = attribute(lab)
    queued = queue_ablations(lab, attribution) if queue else []
    out.mkdir(parents=True, exist_ok=True)
    path = out / "attribution.md"
    path.write_text(render_markdown(attribution))
    return path, attribution, queued

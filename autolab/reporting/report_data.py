"""The numbers of ``autolab report``, from plain data: what the Markdown, the HTML page and the
PNG charts (:mod:`.report`, :mod:`.charts`) render.

API::

    collect(experiments, metrics=None, *, metric="val_bpb", direction=MINIMIZE,
            curve_metric="train_loss", title="...", promotions=None, anomalies=(), top=50,
            max_curves=12, now=None, promotion=None) -> ReportData

``metrics`` is a ``pyarrow.Table`` (metric-store schema), a list of ``MetricPoint``, a metric
store, or None; only the curves drawn are read from it. ``promotions`` defaults to experiments
flagged ``promoted``; ``anomalies`` are the Reporter's findings (blocking flags on experiments
without a matching finding are listed too). ``promotion`` is the lab's ``[promotion]`` table
(the leaderboard uses the gate's statistics). For 10,000 experiments: at most ``max_curves``
curves (downsampled, spikes kept), and Gantt bars closer than a pixel merged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from autolab.reporting import svg
from autolab.reporting.anomalies import Anomaly
from autolab.reporting.curves import Curve, curves_from, downsample, reference
from autolab.reporting.isolation import finished_runs, isolation_of, isolation_summary
from autolab.reporting.summary import (
    Entry,
    Promotion,
    Segment,
    SlotUse,
    gantt_segments,
    leaderboard,
    main_value,
    merge_segments,
    promotions_from,
    pruned_savings,
    utilisation,
)
from autolab.run import gate
from autolab_core.config import PromotionSection
from autolab_core.models import Direction, Experiment
from autolab_core.vocab import Flag, Role

MAX_GANTT_BARS = 3000
CURVE_POINTS = 300


@attrs.frozen
class ReportData:
    """Everything the three renderings show."""

    title: str
    metric: str
    direction: Direction
    curve_metric: str
    generated_at: float
    counts: dict[str, int]
    entries: list[Entry]  # the whole leaderboard, best first
    top: int
    base_value: float | None  # main's score on the newest baseline's code (the gate's runs)
    base_sigma: float | None  # the gate's pooled noise
    promotions: list[Promotion]
    main_line: list[tuple[float, float]]  # (time, main's value) through the promotions
    curves: list[tuple[str, str, list[tuple[float, float]]]]
    segments: list[Segment]
    slot_use: list[SlotUse]
    overall_use: float
    anomalies: list[Anomaly]
    saved_seconds: float
    # (experiment, role, seed, value, isolation level) per finished run, oldest first
    runs: list[tuple[str, str, int, float, str]] = attrs.field(factory=list)
    isolation: str | None = None  # "isolation: bwrap (12 runs)"


def _anomalies(experiments: Sequence[Experiment], given: Sequence[Anomaly]) -> list[Anomaly]:
    seen = {(a.experiment_id, a.flag) for a in given}
    out = list(given)
    for e in experiments:
        for f in map(Flag.parse, e.flags):
            if f.blocking and (e.id, f.kind) not in seen:
                seen.add((e.id, f.kind))
                out.append(Anomaly(e.id, f.kind, f.reason or e.reason or "flagged by the loop"))
    return out


def _curves(
    experiments: Sequence[Experiment], entries: Sequence[Entry], metrics: Any, name: str,
    max_curves: int,
) -> list[tuple[str, str, list[tuple[float, float]]]]:
    if metrics is None or max_curves < 1:
        return []
    baselines = sorted((e for e in experiments if e.role == Role.BASELINE and e.history),
                       key=lambda e: e.history[-1].at)[-20:]
    chosen = [e.experiment_id for e in entries[: max_curves - 1]]
    ids = chosen + [e.id for e in baselines]
    found = curves_from(metrics, ids, [name])
    out: list[tuple[str, str, list[tuple[float, float]]]] = []
    base_curves = [found[e.id][name] for e in baselines if name in found.get(e.id, {})]
    if base_curves:
        steps = sorted({s for c in base_curves for s in downsample(c, CURVE_POINTS).steps})
        ref = reference(base_curves, steps)
        out.append(("main (baseline median)", "#111827",
                    [(s, v) for s, v in zip(steps, ref, strict=True) if v is not None]))
    titles = {e.experiment_id: e.title for e in entries}
    for i, exp_id in enumerate(chosen):
        curve: Curve | None = found.get(exp_id, {}).get(name)
        if curve is None:
            continue
        small = downsample(curve, CURVE_POINTS)
        label = f"{exp_id}: {titles.get(exp_id, '')}"[:80]
        out.append((label, svg.PALETTE[i % len(svg.PALETTE)],
                    list(zip(small.steps, small.values, strict=True))))
    return out


def collect(
    experiments: Sequence[Experiment],
    metrics: Any = None,
    *,
    metric: str = "val_bpb",
    direction: Direction = Direction.MINIMIZE,
    curve_metric: str = "train_loss",
    title: str = "autolab report",
    promotions: Sequence[Promotion] | None = None,
    anomalies: Sequence[Anomaly] = (),
    top: int = 50,
    max_curves: int = 12,
    now: float | None = None,
    promotion: PromotionSection | None = None,
) -> ReportData:
    """The numbers of the report (no files written)."""
    now = time.time() if now is None else now
    experiments = list(experiments)
    entries = leaderboard(experiments, direction, promotion)
    proms = list(promotions) if promotions is not None else promotions_from(experiments, direction)
    baselines = [e for e in experiments if e.role == Role.BASELINE and e.result is not None]
    first = min(baselines, key=lambda e: e.history[0].at if e.history else 0.0, default=None)
    base0 = main_value(experiments, first.base_code or "") if first else None
    main_line: list[tuple[float, float]] = []
    if base0 is not None and first is not None:
        main_line.append((first.history[0].at if first.history else now, base0))
    main_line += [(p.at, p.value) for p in proms if p.value is not None]
    latest = max(baselines, key=lambda e: e.history[-1].at if e.history else 0.0, default=None)
    rules = promotion or PromotionSection()
    segs = gantt_segments(experiments, now)
    uses, overall = utilisation(segs)
    if len(segs) > MAX_GANTT_BARS:
        span = max(s.end for s in segs) - min(s.start for s in segs)
        segs = merge_segments(segs, span / 1500)
    return ReportData(
        title=title, metric=metric, direction=direction, curve_metric=curve_metric,
        generated_at=now,
        counts=dict(Counter(e.status.value for e in experiments)),
        entries=entries, top=top,
        base_value=main_value(experiments, latest.base_code or "") if latest else None,
        base_sigma=gate.pooled_sigma(experiments, rules.min_sigma),
        promotions=proms, main_line=main_line,
        curves=_curves(experiments, entries, metrics, curve_metric, max_curves),
        segments=segs, slot_use=uses, overall_use=overall,
        anomalies=_anomalies(experiments, anomalies),
        saved_seconds=pruned_savings(experiments),
        runs=[(e.id, str(e.role), e.seed, e.result.value, isolation_of(e))
              for e in finished_runs(experiments) if e.result is not None],
        isolation=isolation_summary(experiments),
    )

"""Metric points to curves, and the baseline curve a candidate is compared with.

API::

    curves_from(data, experiment_ids=None, names=None) -> dict[exp_id, dict[name, Curve]]
    latest_metrics(data, experiment_ids=None) -> dict[exp_id, dict[name, (step, value, wall)]]
    reference(curves: Sequence[Curve], steps) -> list[float | None]   # median baseline
    downsample(curve, max_points) -> Curve                               # keeps spikes

``data`` is a ``pyarrow.Table`` in the metric-store schema, a sequence of ``MetricPoint``, or
a metric store (anything with ``query(experiment_ids, names)``).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from autolab_core.models import MetricPoint


@attrs.frozen
class Curve:
    """One metric of one experiment: steps ascending, one value per step (the last logged)."""

    steps: tuple[int, ...]
    values: tuple[float, ...]
    times: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    def upto(self, step: int) -> Curve:
        """The part of the curve at or before ``step``."""
        n = bisect.bisect_right(self.steps, step)
        return Curve(self.steps[:n], self.values[:n], self.times[:n])

    def finite(self) -> Curve:
        keep = [i for i, v in enumerate(self.values) if math.isfinite(v)]
        return Curve(
            tuple(self.steps[i] for i in keep),
            tuple(self.values[i] for i in keep),
            tuple(self.times[i] for i in keep) if self.times else (),
        )

    def at(self, step: float) -> float | None:
        """Linear interpolation at ``step``; None outside the logged range."""
        if not self.steps or step < self.steps[0] or step > self.steps[-1]:
            return None
        i = bisect.bisect_left(self.steps, step)
        if self.steps[i] == step:
            return self.values[i]
        s0, s1 = self.steps[i - 1], self.steps[i]
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (step - s0) / (s1 - s0)

    def tail_mean(self, n: int) -> float | None:
        """Mean of the last ``n`` finite values (a smoothed "current" value)."""
        vals = [v for v in self.values[-n:] if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else None

    def smoothed_at(self, step: int, n: int) -> float | None:
        """Mean of the last ``n`` finite values at or before ``step`` (None if none)."""
        return self.upto(step).tail_mean(n) if self.steps and step >= self.steps[0] else None

    def seconds_per_step(self) -> float | None:
        if len(self.times) < 2 or self.steps[-1] == self.steps[0]:
            return None
        return max(0.0, (self.times[-1] - self.times[0]) / (self.steps[-1] - self.steps[0]))


def _table(data: Any, experiment_ids: Sequence[str] | None, names: Sequence[str] | None) -> Any:
    from autolab.metrics.schema import filter_table, points_to_table

    if hasattr(data, "query") and callable(data.query):
        return data.query(experiment_ids, names)
    if hasattr(data, "column_names"):
        return filter_table(data, experiment_ids, names)
    return filter_table(points_to_table(list(data)), experiment_ids, names)


def _rows(data: Any, experiment_ids: Sequence[str] | None, names: Sequence[str] | None
          ) -> Iterable[tuple[str, str, int, float, float]]:
    if isinstance(data, list | tuple) and (not data or isinstance(data[0], MetricPoint)):
        ids = None if experiment_ids is None else set(experiment_ids)
        wanted = None if names is None else set(names)
        rows = [
            (p.experiment_id, p.name, int(p.step), float(p.value), float(p.wall_time))
            for p in data
            if (ids is None or p.experiment_id in ids) and (wanted is None or p.name in wanted)
        ]
        rows.sort(key=lambda r: (r[0], r[1], r[2], r[4]))
        return rows
    table = _table(data, experiment_ids, names)
    table = table.sort_by(
        [("experiment_id", "ascending"), ("name", "ascending"), ("step", "ascending"),
         ("wall_time", "ascending")]
    )
    return zip(
        table.column("experiment_id").to_pylist(), table.column("name").to_pylist(),
        table.column("step").to_pylist(), table.column("value").to_pylist(),
        table.column("wall_time").to_pylist(), strict=True,
    )


def curves_from(
    data: Any,
    experiment_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, dict[str, Curve]]:
    """``{experiment_id: {metric name: Curve}}``; a step logged twice keeps its last value."""
    out: dict[str, dict[str, Curve]] = {}
    key: tuple[str, str] | None = None
    steps: list[int] = []
    values: list[float] = []
    times: list[float] = []

    def close() -> None:
        if key is not None:
            out.setdefault(key[0], {})[key[1]] = Curve(tuple(steps), tuple(values), tuple(times))

    for exp, name, step, value, wall in _rows(data, experiment_ids, names):
        if (exp, name) != key:
            close()
            key, steps, values, times = (exp, name), [], [], []
        if steps and steps[-1] == step:
            values[-1], times[-1] = value, wall
            continue
        steps.append(step)
        values.append(value)
        times.append(wall)
    close()
    return out


def latest_metrics(
    data: Any, experiment_ids: Sequence[str] | None = None
) -> dict[str, dict[str, tuple[int, float, float]]]:
    """``{experiment_id: {name: (step, value, wall_time)}}`` of each metric's last point."""
    out: dict[str, dict[str, tuple[int, float, float]]] = {}
    for exp, by_name in curves_from(data, experiment_ids).items():
        out[exp] = {
            name: (c.steps[-1], c.values[-1], c.times[-1] if c.times else math.nan)
            for name, c in by_name.items() if c.steps
        }
    return out


def reference(curves: Sequence[Curve], steps: Iterable[float]) -> list[float | None]:
    """The median over ``curves`` (baselines) at each step, interpolated, never extrapolated."""
    finite = [c.finite() for c in curves]
    out: list[float | None] = []
    for step in steps:
        vals = [v for c in finite if (v := c.at(step)) is not None]
        out.append(statistics.median(vals) if vals else None)
    return out


def downsample(curve: Curve, max_points: int) -> Curve:
    """At most about ``max_points`` points: per bucket, first, min and max (spikes survive)."""
    n = len(curve)
    if n <= max_points or max_points < 4:
        return curve
    buckets = max(1, max_points // 3)
    size = n / buckets
    keep: set[int] = {0, n - 1}
    vals = curve.values
    for b in range(buckets):
        lo, hi = int(b * size), min(n, int((b + 1) * size))
        if lo >= hi:
            continue
        idx = range(lo, hi)
        keep.add(lo)
        finite = [i for i in idx if math.isfinite(vals[i])]
        if finite:
            keep.add(min(finite, key=vals.__getitem__))
            keep.add(max(finite, key=vals.__getitem__))
    order = sorted(keep)
    return Curve(
        tuple(curve.steps[i] for i in order),
        tuple(vals[i] for i in order),
        tuple(curve.times[i] for i in order) if curve.times else (),
    )

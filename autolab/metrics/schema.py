"""The one table shape every metric store returns from ``query``.

Columns: ``experiment_id`` (string), ``step`` (int64), ``name`` (string), ``value`` (float64),
``wall_time`` (float64, Unix seconds). NaN and Inf values are kept as they are: a NaN is a
finding (see :mod:`autolab.reporting.anomalies`), never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from autolab_core.models import MetricPoint

SCHEMA = pa.schema(
    [
        pa.field("experiment_id", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("wall_time", pa.float64(), nullable=False),
    ]
)
COLUMNS = tuple(SCHEMA.names)
SORT_KEYS = [("name", "ascending"), ("experiment_id", "ascending"), ("step", "ascending")]


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def points_to_table(points: Sequence[MetricPoint]) -> pa.Table:
    """A table of ``points`` in :data:`SCHEMA`, in the given order."""
    return pa.table(
        {
            "experiment_id": pa.array([p.experiment_id for p in points], pa.string()),
            "step": pa.array([int(p.step) for p in points], pa.int64()),
            "name": pa.array([p.name for p in points], pa.string()),
            "value": pa.array([float(p.value) for p in points], pa.float64()),
            "wall_time": pa.array([float(p.wall_time) for p in points], pa.float64()),
        },
        schema=SCHEMA,
    )


def table_to_points(table: pa.Table) -> list[MetricPoint]:
    """The rows of ``table`` as :class:`MetricPoint` records (for small tables)."""
    cols: dict[str, list[Any]] = {c: table.column(c).to_pylist() for c in COLUMNS}
    return [
        MetricPoint(e, s, n, v, w)
        for e, s, n, v, w in zip(
            cols["experiment_id"], cols["step"], cols["name"], cols["value"], cols["wall_time"],
            strict=True,
        )
    ]


def filter_table(
    table: pa.Table,
    experiment_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> pa.Table:
    """Rows of ``table`` whose experiment and metric name are in the given lists (None: all)."""
    import pyarrow.compute as pc

    mask = None
    if experiment_ids is not None:
        mask = pc.is_in(table.column("experiment_id"), pa.array(list(experiment_ids), pa.string()))
    if names is not None:
        by_name = pc.is_in(table.column("name"), pa.array(list(names), pa.string()))
        mask = by_name if mask is None else pc.and_(mask, by_name)
    return table if mask is None else table.filter(mask)

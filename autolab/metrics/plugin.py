"""Registers the built-in metric stores: ``parquet`` (default) and ``trackio``.

Importing this module imports neither pyarrow nor trackio; the stores do that when used.
"""

from __future__ import annotations

from autolab.metrics.parquet_store import ParquetMetricStore
from autolab.metrics.trackio_store import TrackioMetricStore
from autolab_core import hookimpl
from autolab_core.hookspecs import Register


@hookimpl
def autolab_register_metric_stores(register: Register) -> None:
    register(ParquetMetricStore)
    register(TrackioMetricStore)

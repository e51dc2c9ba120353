"""Metric stores: where every ``AUTOLAB_METRIC`` point of every experiment lives.

``parquet`` (the default) keeps an append-only Parquet dataset under ``.autolab/metrics``;
``trackio`` writes each experiment as a Trackio run so that ``trackio show`` is a live
dashboard. Both return the same ``pyarrow.Table`` from ``query`` (see
:mod:`autolab.metrics.schema`). This package imports neither pyarrow nor trackio until a store
is used, so ``autolab plugins`` stays fast.
"""

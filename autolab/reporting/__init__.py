"""The Reporter: anomaly flags, early stopping, ``autolab status`` and ``autolab report``.

Everything here is a pure function of plain data (lists of :class:`~autolab_core.Experiment`,
``pyarrow`` tables or lists of :class:`~autolab_core.MetricPoint`), so the orchestrator calls
it and tests feed it synthetic curves. Modules:

* :mod:`.options` - the ``[reporter]`` table of ``autolab.toml``.
* :mod:`.curves` - metric points to per-experiment curves; baseline reference curves.
* :mod:`.anomalies` - NaN/Inf, divergence, stall, throughput drop, crash class, implausible.
* :mod:`.early_stopping` - median-stopping and successive-halving prune decisions.
* :mod:`.reporter` - ``review(...)``: both of the above for a whole lab, once per tick.
* :mod:`.summary` - leaderboard, promotions, Gantt segments, utilisation (shared data).
* :mod:`.status` - the rich table of ``autolab status``.
* :mod:`.report` - Markdown + self-contained HTML report; :mod:`.charts` - PNG charts.
* :mod:`.synthetic` - a synthetic lab (experiments and curves) for demos, tests, benchmarks.
"""

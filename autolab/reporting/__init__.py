"""The Reporter: anomaly flags, early stopping, ``autolab status``, ``autolab report`` and
the end-of-run summary.

The rules are pure functions of plain data (lists of :class:`~autolab_core.Experiment`,
``pyarrow`` tables or lists of :class:`~autolab_core.MetricPoint`); nothing here imports the
run loop or its assembly: the metric store is passed in. Modules, bottom to top:

* :mod:`.options` - the ``[reporter]`` table of ``autolab.toml``.
* :mod:`.curves` - metric points to per-experiment curves; baseline reference curves.
* :mod:`.anomalies` - NaN/Inf, divergence, stall, throughput drop, crash class, implausible win.
* :mod:`.early_stopping` - median-stopping and successive-halving prune decisions.
* :mod:`.review` - ``review(...)`` and the loop's ``Reporter``: both of the above, once per tick.
* :mod:`.summary` - leaderboard (the gate's statistics), end-of-run summary, promotions, Gantt
  segments, utilisation.
* :mod:`.status` - the rich renderable of ``autolab status``.
* :mod:`.report_data` - the report's numbers; :mod:`.report` - Markdown + self-contained HTML;
  :mod:`.charts` - PNG charts; :mod:`.svg` - inline SVG charts.
* :mod:`.lab` - status and report of a lab on disk (store passed in).
* :mod:`.console` - what the CLI prints (``autolab run``'s summary and live table, ``status``,
  ``report``).
* :mod:`.synthetic` - a synthetic lab (experiments and curves) for demos, tests, benchmarks.
"""

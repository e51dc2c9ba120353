"""``autolab run``, in layers (each imports only the ones above it in this list):

- :mod:`~autolab.run.ledger`: the experiments of a lab, their records on ``main``, hook calls;
- :mod:`~autolab.run.gate`: pure statistics (noise, screen and confirm thresholds);
- :mod:`~autolab.run.promotion`: verdicts, promotion, approval, baseline scheduling;
- :mod:`~autolab.run.jobs`: run specs, submission, following logs, finishing jobs;
- :mod:`~autolab.run.smoke`: checks of a patched candidate before it is queued;
- :mod:`~autolab.run.proposals`: Researcher -> Planner -> Worker in a background thread;
- :mod:`~autolab.run.loop`: the loop that ties them together;
- :mod:`~autolab.run.settings` and :mod:`~autolab.run.assemble`: settings and plugins from
  ``autolab.toml`` and the command line.
"""

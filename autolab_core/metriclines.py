"""The line format jobs use to report metrics on stdout (kept for importers).

Everything here now lives in :mod:`autolab_core.job`, which holds every ``AUTOLAB_*`` line
kind; this module re-exports the metric and legacy result helpers under their old names.
"""

from __future__ import annotations

from autolab_core.job import (
    ERROR_PREFIX,
    HARDWARE_PREFIX,
    METRIC_PREFIX,
    RESULT_PREFIX,
    find_result,
    format_metric_line,
    format_result_line,
    iter_pattern_values,
    parse_metric_line,
)

__all__ = ["ERROR_PREFIX", "HARDWARE_PREFIX", "METRIC_PREFIX", "RESULT_PREFIX", "find_result",
           "format_metric_line", "format_result_line", "iter_pattern_values", "parse_metric_line"]

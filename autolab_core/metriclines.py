"""The line format jobs use to report metrics on stdout, the same on every backend.

A job prints ``AUTOLAB_METRIC {"step": 10, "train_loss": 2.31}``; the orchestrator reads it
from the backend's log stream. The runner prints one ``AUTOLAB_RESULT {...}`` line carrying
the protected evaluation's result and the run's nonce. This module imports nothing heavy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

METRIC_PREFIX = "AUTOLAB_METRIC "
RESULT_PREFIX = "AUTOLAB_RESULT "


def _json_number(value: float) -> Any:
    # JSON has no NaN/Inf; keep them as strings so a NaN is reported, not lost.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def format_metric_line(step: int, metrics: Mapping[str, float]) -> str:
    if "step" in metrics:
        raise ValueError("a metric cannot be called 'step'; it is the step number")
    payload = {"step": int(step), **{k: _json_number(float(v)) for k, v in metrics.items()}}
    return METRIC_PREFIX + json.dumps(payload, separators=(",", ":"))


def parse_metric_line(line: str) -> tuple[int, dict[str, float]] | None:
    """``(step, {name: value})`` for a metric line, else None. Malformed lines are skipped."""
    start = line.find(METRIC_PREFIX)
    if start < 0:
        return None
    try:
        payload = json.loads(line[start + len(METRIC_PREFIX) :])
        step = int(payload.pop("step"))
        values = {str(k): float(v) for k, v in payload.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return step, values


def iter_pattern_values(text: str, pattern: str) -> Iterator[float]:
    """Values captured by ``pattern`` (first group) in ``text``, line by line."""
    regex = re.compile(pattern)
    for line in text.splitlines():
        match = regex.search(line)
        if match:
            try:
                yield float(match.group(1))
            except (ValueError, IndexError):
                continue


def format_result_line(payload: Mapping[str, Any]) -> str:
    return RESULT_PREFIX + json.dumps(dict(payload), separators=(",", ":"), sort_keys=True)


def find_result(text: str, nonce: str) -> dict[str, Any] | None:
    """The last result line in ``text`` that carries ``nonce``, parsed, or None."""
    found = None
    for line in text.splitlines():
        start = line.find(RESULT_PREFIX)
        if start < 0:
            continue
        try:
            payload = json.loads(line[start + len(RESULT_PREFIX) :])
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("nonce") == nonce:
            found = payload
    return found

"""The ``[reporter]`` table of ``autolab.toml``.

Example::

    [reporter]
    early_stopping = "median"   # "off" (default), "median" or "halving"
    metric = "train_loss"       # the curve watched for pruning and divergence
    min_steps = 200             # nothing is pruned or called divergent before this step
    stall_s = "10m"             # no metric for this long while running -> "stall"

API: ``parse_reporter_options(table: Mapping | None) -> ReporterOptions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from autolab_core.config import parse_options
from autolab_core.models import Direction

_positive: Any = attrs.validators.gt(0)  # ints and floats


def _fraction(_inst: Any, attribute: Any, value: Any) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


@attrs.frozen
class ReporterOptions:
    """Thresholds of the Reporter. Every field is a key of ``[reporter]``."""

    early_stopping: str = attrs.field(
        default="off", metadata={"choices": ["off", "median", "halving"]}
    )
    metric: str = "train_loss"
    metric_direction: str = attrs.field(
        default="minimize", metadata={"choices": ["minimize", "maximize"]}
    )
    throughput_metric: str = "tok_per_s"
    min_steps: int = attrs.field(default=100, validator=attrs.validators.ge(0))
    min_peers: int = attrs.field(default=3, validator=_positive)
    smooth: int = attrs.field(default=5, validator=_positive)  # points averaged for a value
    halving_eta: int = attrs.field(default=3, validator=attrs.validators.ge(2))
    halving_rungs: list[int] | None = None  # default: min_steps * eta**k
    stall_s: float = attrs.field(default=900.0, validator=_positive, metadata={"duration": True})
    divergence_ratio: float = attrs.field(default=0.5, validator=_positive)
    divergence_patience: int = attrs.field(default=3, validator=_positive)
    throughput_drop: float = attrs.field(default=0.3, validator=_fraction)
    implausible_sigmas: float = attrs.field(default=10.0, validator=_positive)
    implausible_ratio: float = attrs.field(default=3.0, validator=_positive)
    implausible_gain: float = attrs.field(default=0.5, validator=_positive)
    min_rel_noise: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))

    @property
    def direction(self) -> Direction:
        """Direction of :attr:`metric` (the watched curve, not the decisive metric)."""
        return Direction(self.metric_direction)


def parse_reporter_options(table: Mapping[str, Any] | None) -> ReporterOptions:
    """Validate ``[reporter]``; errors name the bad key and the valid ones."""
    return parse_options(ReporterOptions, table, "reporter")

"""attrs validators and fields shared by every options class (``[backend.x]``, ``[llm.y]``...).

Raise ``ValueError`` with the field's name; :func:`autolab_core.config.parse_options` turns it
into a :class:`~autolab_core.errors.ConfigError` that names the table::

    @attrs.frozen
    class MyOptions:
        workers: int = attrs.field(default=1, validator=positive)
        poll_interval: float = duration(5.0)   # accepts 5, "5s", "10m", "2h"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``value > 0`` (None passes: use a non-optional type to forbid it)."""
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``value >= 0`` (None passes)."""
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def between(low: float, high: float) -> Validator:
    """``low <= value <= high`` (None passes)."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low:g} and {high:g}, got {value!r}")

    return check


def duration(default: float | None) -> Any:
    """An attrs field in seconds that also accepts ``"90s"``, ``"10m"``, ``"2h"`` in TOML."""
    return attrs.field(default=default, validator=non_negative, metadata={"duration": True})

"""``autolab try NAME=VALUE``: check a user's idea against the knobs of main's editable files.

Accepted names are those :func:`autolab.agents.knobs.resolve` accepts: ``learning_rate``,
``LR``, ``model.n_layer``, ``--lr`` / ``lr`` (argparse), ``TrainConfig.lr`` or ``lr``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from autolab.agents.knobs import find_knobs, format_value, resolve
from autolab.agents.knobs.model import Knob
from autolab_core.errors import ConfigError, PatchError
from autolab_core.lab import Lab

_WORDS = {"true": True, "false": False}


def parse_value(text: str) -> Any:
    """A Python or YAML/TOML-style literal (``0.002``, ``true``, ``'gelu'``), else the text."""
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def check_value(knob: Knob, value: Any) -> None:
    """Refuse a value of another kind than the knob's (a word for a number, a float for an int)."""
    old = knob.value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(old, bool) and not isinstance(value, bool):
        raise ConfigError(f"{knob.name} is a boolean ({knob.text}); write {knob.name}=true or false")
    if isinstance(old, int) and not isinstance(old, bool) and not (isinstance(value, int)
                                                                  and not isinstance(value, bool)):
        raise ConfigError(f"{knob.name} is an integer ({knob.text}); got {value!r}")
    if isinstance(old, float) and not number:
        raise ConfigError(f"{knob.name} is a number ({knob.text}); got {value!r}")
    if isinstance(old, str) and not isinstance(value, str):
        raise ConfigError(f"{knob.name} is a string ({knob.text}); got {value!r}; quote it")
    if isinstance(old, tuple):
        raise ConfigError(f"{knob.name} is a tuple; change it with an LLM idea or by hand")


def parse_changes(lab: Lab, items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` items -> {canonical knob name: value}, checked against main's knobs."""
    cfg = lab.config
    files = lab.files_at(lab.main_commit(), cfg.files.editable)
    knobs = find_knobs(files, cfg.files.editable, cfg.run.argv())
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip("-+"):
            raise ConfigError(f"{item!r}: write NAME=VALUE, e.g. learning_rate=0.002 or "
                              f"model.n_layer=4")
        try:
            knob = resolve(name, knobs)
        except PatchError as exc:
            raise ConfigError(f"{exc} (in {', '.join(cfg.files.editable)})") from None
        if knob.set_by:
            raise ConfigError(f"{knob.name} is set by [run] command ({knob.set_by}); remove it "
                              f"from the command to let autolab change it")
        value = parse_value(text)
        check_value(knob, value)
        if value == knob.value:
            raise ConfigError(f"{knob.name} is already {format_value(value)} on main")
        out[knob.name] = value
    return out


def parse_resources(flavor: str | None = None, gpus: int | None = None,
                    memory: str | None = None) -> dict[str, Any]:
    """``--flavor``/``--gpus``/``--memory`` as ``Hypothesis.resources`` (``memory_gb``).

    ``memory`` is a size in GB: ``"64"``, ``"64G"``, ``"64GB"`` (or ``"512M"``)."""
    out: dict[str, Any] = {}
    if flavor is not None:
        if not flavor.strip():
            raise ConfigError("--flavor is empty; e.g. --flavor a10g-small")
        out["flavor"] = flavor.strip()
    if gpus is not None:
        if gpus < 0:
            raise ConfigError(f"--gpus must be 0 or more, got {gpus}")
        out["gpus"] = gpus
    if memory is not None:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([GgMm]?)[Bb]?\s*", memory)
        if not match or float(match.group(1)) <= 0:
            raise ConfigError(f"--memory {memory!r}: write a size such as 64G or 512M")
        size = float(match.group(1)) / (1024 if match.group(2).lower() == "m" else 1)
        out["memory_gb"] = int(size) if size == int(size) else round(size, 3)
    return out

"""The settings of one ``autolab run``, resolved once: command line over ``autolab.toml`` over
defaults, each with where it came from (shown in the run's header)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from autolab.run.loop import RunOptions
from autolab_core.config import Config, parse_duration

CLI, TOML, DEFAULT = "cli", "toml", "default"


@attrs.frozen
class Setting:
    value: Any
    source: str  # "cli", "toml" (with the key) or "default"

    def describe(self) -> str:
        shown = "none" if self.value is None else self.value
        return f"{shown} ({self.source})"


@attrs.frozen
class Settings:
    """Every setting of the run with its source."""

    backend: Setting
    workers: Setting  # None: the backend decides (its own default)
    max_experiments: Setting
    time: Setting  # seconds, from --time
    max_hours: Setting
    on_stop: Setting
    strategy: Setting
    metric_store: Setting

    def options(self, **extra: Any) -> RunOptions:
        """The loop's options (``extra``: fields tests and benchmarks tune, e.g. poll_interval)."""
        return RunOptions(workers=self.workers.value, max_experiments=self.max_experiments.value,
                          time_s=self.time.value, on_stop=self.on_stop.value, **extra)

    def header(self, slots: int, backend_decides: bool = True) -> list[str]:
        """One line per effective setting, naming its source; ``slots`` is the effective
        number of concurrent jobs, ``backend_decides`` whether the backend set it."""
        workers = self.workers if self.workers.value is not None else Setting(
            slots, "default: the backend's own" if backend_decides else DEFAULT)
        rows = [("backend", self.backend), ("workers", workers),
                ("max experiments", self.max_experiments), ("time limit", self.time),
                ("max hours", self.max_hours), ("on stop", self.on_stop),
                ("strategy", self.strategy), ("metric store", self.metric_store)]
        return [f"  {name:<16}{setting.describe()}" for name, setting in rows]


def _pick(cli: Any, toml: tuple[bool, Any, str], default: Any) -> Setting:
    present, value, key = toml
    if cli is not None:
        return Setting(cli, CLI)
    if present:
        return Setting(value, f"{TOML} {key}")
    return Setting(default, DEFAULT)


def _toml(raw: Mapping[str, Any], section: str, key: str, *sub: str) -> tuple[bool, Any, str]:
    table: Any = raw.get(section) or {}
    for name in sub:
        table = table.get(name) or {} if isinstance(table, dict) else {}
    where = f"[{'.'.join((section, *sub))}] {key}"
    if isinstance(table, dict) and key in table:
        return True, table[key], where
    return False, None, where


def resolve(config: Config, *, workers: int | None = None, max_experiments: int | None = None,
            time_limit: str | None = None, on_stop: str | None = None,
            strategy: str | None = None,
            defaults: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the command line (None: not given), ``config`` and ``defaults``.

    ``defaults`` replaces built-in defaults (``autolab demo`` runs 2 workers for 12 minutes).
    """
    raw, d = config.raw, dict(defaults or {})
    time_s = None if time_limit is None else parse_duration(time_limit, "--time")
    default_time = d.get("time_limit")
    return Settings(
        backend=_pick(None, _toml(raw, "backend", "name"), config.backend),
        workers=_pick(workers, _toml(raw, "backend", "workers", config.backend),
                      d.get("workers")),
        max_experiments=_pick(max_experiments, _toml(raw, "budget", "max_experiments"),
                              d.get("max_experiments")),
        time=_pick(time_s, (False, None, ""),
                   None if default_time is None else parse_duration(default_time, "--time")),
        max_hours=_pick(None, _toml(raw, "budget", "max_hours"), None),
        on_stop=_pick(on_stop, (False, None, ""), d.get("on_stop", "finish")),
        strategy=_pick(strategy, _toml(raw, "search", "strategy"), config.search.strategy),
        metric_store=_pick(None, _toml(raw, "metrics", "store"), config.metric_store),
    )

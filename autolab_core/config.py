"""``autolab.toml``: the lab's configuration, validated with messages that name the fix.

Every section is an attrs class; :func:`parse_options` turns a TOML table into one, rejecting
unknown keys (listing the valid ones) and values of the wrong type. Plugins use the same
function for their own option tables.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from autolab_core.errors import ConfigError
from autolab_core.models import Direction
from autolab_core.validators import non_negative, positive

CONFIG_FILE = "autolab.toml"
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"10m"``, ``"2h"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as 600, '10m' or '2h', got {value!r}")
    if isinstance(value, int | float):
        if not value >= 0:  # also rejects NaN
            raise ConfigError(f"{where}: a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ConfigError(f"{where}: expected a duration such as 600, '10m' or '2h', got {value!r}")


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return isinstance(value, list | tuple) and all(
            _type_ok(v, args[0]) for v in value
        ) if args else isinstance(value, list | tuple)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is not None:  # list[str], str | None: keep the arguments
        return str(annotation).replace("typing.", "")
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")


def parse_options(cls: type[T], table: Mapping[str, Any] | None, where: str) -> T:
    """Build attrs class ``cls`` from ``table``; ``where`` names the table in errors.

    Keys may use ``-`` or ``_``. A field's ``metadata={"choices": [...]}`` restricts its values.
    """
    table = dict(table or {})
    attrs.resolve_types(cls)  # type: ignore[type-var]
    fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        field = fields.get(name)
        if field is None:
            valid = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(f"[{where}] unknown key {key!r}; valid keys: {valid}")
        choices = field.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"[{where}] {key} = {value!r} is not valid; choose one of: "
                + ", ".join(repr(c) for c in choices)
            )
        if field.metadata.get("duration"):
            value = None if value is None else parse_duration(value, f"[{where}] {key}")
        elif not _type_ok(value, field.type):
            raise ConfigError(
                f"[{where}] {key} = {value!r} has the wrong type; expected {_describe(field.type)}"
            )
        if isinstance(value, list):
            value = tuple(value) if typing.get_origin(field.type) is tuple else value
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}] {exc}") from None


@attrs.frozen
class LabSection:
    name: str = ""
    description: str = ""


@attrs.frozen
class RunSection:
    """How to run one experiment. Both commands run in the experiment's checkout."""

    command: str | list[str] = "python train.py"
    eval_command: str | list[str] | None = None
    time_limit: float | None = attrs.field(default=1800.0, metadata={"duration": True})
    env: dict[str, str] = attrs.field(factory=dict)
    seed_env: str = "AUTOLAB_SEED"
    # The interpreter whose directory goes first on PATH for the lab's commands (so `python`
    # in `command` is it); None: the interpreter that runs autolab (and the job runner).
    python: str | None = attrs.field(default=None, validator=lambda _i, _a, v: _check_python(v))
    # False cuts jobs off the network where the sandbox can (bubblewrap); labs that download
    # data or report to a tracker from the job keep the default.
    network: bool = True
    # The sandbox jobs run in: "auto" (the strongest this machine allows: bubblewrap, then
    # Landlock), or a level ("bwrap", "landlock", "none"); a level the machine lacks falls
    # back to the next weaker one, and every result records the level that ran.
    isolation: str = attrs.field(default="auto",
                                 metadata={"choices": ("auto", "bwrap", "landlock", "none")})
    #: pip requirements installed before each job by backends that build their own
    #: environment (hf-jobs); SLURM and local jobs use the lab's environment as it is.
    requirements: list[str] = attrs.field(factory=list)
    #: How long the checkouts of ended experiments (and the backend's job folders) are kept.
    keep_checkouts: float | None = attrs.field(default=7 * 86400.0, metadata={"duration": True})

    def argv(self) -> tuple[str, ...]:
        return _argv(self.command)

    def python_dir(self) -> str:
        """The directory put first on PATH for the lab's commands."""
        return os.path.dirname(resolve_python(self.python))

    def eval_argv(self) -> tuple[str, ...] | None:
        return None if self.eval_command is None else _argv(self.eval_command)


def resolve_python(python: str | None) -> str:
    """The absolute path of ``[run] python`` (a path, or a name found on PATH); None: the
    interpreter running autolab."""
    if python is None:
        return sys.executable
    found = shutil.which(os.path.expanduser(python))
    if found is None:
        raise ValueError(
            f"python = {python!r} is not an executable file or a command on PATH; give the "
            "interpreter's full path (e.g. '/path/to/venv/bin/python'), or remove the key to "
            "run the lab's commands with the interpreter that runs autolab")
    return os.path.abspath(found)


def _check_python(python: str | None) -> None:
    """attrs validator of ``[run] python``."""
    resolve_python(python)


def _argv(command: str | list[str]) -> tuple[str, ...]:
    return tuple(shlex.split(command)) if isinstance(command, str) else tuple(command)


@attrs.frozen
class MetricSection:
    """The one number that decides promotions, and where it comes from.

    ``source = "eval"``: the protected ``eval_command`` writes ``results_file`` (JSON) in the
    output directory; this is the trusted path. ``source = "pattern"``: the number is read from
    the program's own output with ``pattern`` (first group), e.g. ``'^val_bpb:\\s*([0-9.]+)'``;
    such results are marked untrusted in the scores.
    """

    name: str = "val_bpb"
    direction: str = attrs.field(default="minimize", metadata={"choices": ["minimize", "maximize"]})
    source: str = attrs.field(default="eval", metadata={"choices": ["eval", "pattern"]})
    pattern: str | None = None
    results_file: str = "result.json"

    @property
    def dir(self) -> Direction:
        return Direction(self.direction)


@attrs.frozen
class FilesSection:
    editable: list[str] = attrs.field(factory=lambda: ["train.py"])
    protected: list[str] = attrs.field(factory=list)
    # held-out evaluation data (globs): pinned by hash, hidden from training where sandboxed
    protected_data: list[str] = attrs.field(factory=list)


@attrs.frozen
class BudgetSection:
    max_experiments: int | None = attrs.field(default=None, validator=positive)
    max_hours: float | None = attrs.field(default=None, validator=positive)
    usd: float | None = None  # compute money (cloud backends)
    llm_usd: float | None = None


@attrs.frozen
class PromotionSection:
    """The noise gate. A candidate must beat main by more than max(min_delta, k_sigma * sigma)."""

    noise_runs: int = attrs.field(default=3, validator=positive)
    k_sigma: float = 2.0
    min_delta: float = 0.0
    confirm_runs: int = attrs.field(default=2, validator=positive)
    max_cost_increase: float = 0.15
    # A cost difference under this many CPU seconds per run is timing noise, not compute.
    min_cost_seconds: float = 1.0
    min_sigma: float = 0.0
    # A fresh baseline run of main after every this many candidate runs (0: only the first
    # noise_runs), so candidates are compared with main measured under the same machine load.
    baseline_every: int = attrs.field(default=8, validator=non_negative)


@attrs.frozen
class SearchSection:
    strategy: str = attrs.field(default="auto", metadata={"choices": ["auto", "knob", "llm", "random"]})
    queue_depth: int | None = None
    seed: int = 0
    exclude: list[str] = attrs.field(factory=list)  # knobs the explorer must not touch
    focus: list[str] = attrs.field(factory=list)  # knobs to try first
    # Run each patched candidate's training command locally for `smoke_seconds` before it is
    # submitted, to catch crashes before they cost money: "remote" (every backend but local),
    # "always" or "never". `smoke_env` is added to its environment (e.g. a small step count).
    smoke: str = attrs.field(default="remote", metadata={"choices": ["remote", "always", "never"]})
    smoke_seconds: float = attrs.field(default=30.0, metadata={"duration": True})
    smoke_env: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Config:
    """A parsed ``autolab.toml``. Plugin tables stay raw dicts until the plugin parses them."""

    root: Path
    lab: LabSection
    run: RunSection
    metric: MetricSection
    files: FilesSection
    budget: BudgetSection
    promotion: PromotionSection
    search: SearchSection
    backend: str
    backend_options: dict[str, dict[str, Any]]
    llm: str | None
    llm_options: dict[str, dict[str, Any]]
    paper_sources: list[str]
    paper_options: dict[str, dict[str, Any]]
    metric_store: str
    metric_store_options: dict[str, dict[str, Any]]
    reporter: dict[str, Any]
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.lab.name or self.root.name

    def backend_table(self, name: str | None = None) -> dict[str, Any]:
        return dict(self.backend_options.get(name or self.backend, {}))


_TOP_KEYS = ("lab", "run", "metric", "files", "budget", "promotion", "search", "backend", "llm",
             "papers", "metrics", "reporter")


def _plugin_section(
    raw: Mapping[str, Any], section: str, key: str, default: str | None
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    table = dict(raw.get(section, {}) or {})
    if not isinstance(raw.get(section, {}), dict):
        raise ConfigError(f"[{section}] must be a table")
    name = table.pop(key, default)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"[{section}] {key} must be a string, got {name!r}")
    options: dict[str, dict[str, Any]] = {}
    for sub, value in table.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"[{section}] unknown key {sub!r}; valid keys: {key}, and one "
                f"[{section}.<plugin-name>] table of options per plugin"
            )
        options[sub] = value
    return name, options


def parse_config(raw: Mapping[str, Any], root: Path) -> Config:
    """Validate a parsed TOML document."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown table [{key}] in {CONFIG_FILE}; valid: {', '.join(_TOP_KEYS)}")
        if not isinstance(raw[key], dict):
            raise ConfigError(
                f"[{key}] must be a table, got {key} = {raw[key]!r}; put its keys under a "
                f"[{key}] header (e.g. [backend] then name = \"slurm\")"
            )
    backend, backend_options = _plugin_section(raw, "backend", "name", "local")
    llm, llm_options = _plugin_section(raw, "llm", "name", None)
    store, store_options = _plugin_section(raw, "metrics", "store", "parquet")
    papers_table = dict(raw.get("papers", {}) or {})
    sources = papers_table.pop("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"[papers] sources must be a list of names, got {sources!r}")
    paper_options = {k: v for k, v in papers_table.items() if isinstance(v, dict)}
    for k, v in papers_table.items():
        if not isinstance(v, dict):
            raise ConfigError(f"[papers] unknown key {k!r}; valid keys: sources, [papers.<name>]")
    metric = parse_options(MetricSection, raw.get("metric"), "metric")
    run = parse_options(RunSection, raw.get("run"), "run")
    if metric.source == "pattern" and not metric.pattern:
        raise ConfigError("[metric] source = 'pattern' needs pattern = '<regex with one group>'")
    if metric.pattern:
        try:
            if re.compile(metric.pattern).groups < 1:
                raise ConfigError(f"[metric] pattern {metric.pattern!r} needs one (group)")
        except re.error as exc:
            raise ConfigError(f"[metric] pattern {metric.pattern!r} is not a regex: {exc}") from None
    if metric.source == "eval" and run.eval_command is None:
        raise ConfigError(
            "[metric] source = 'eval' needs [run] eval_command, the protected evaluation that "
            "writes the results file; or set source = 'pattern' with a pattern"
        )
    files = parse_options(FilesSection, raw.get("files"), "files")
    if not files.editable:
        raise ConfigError("[files] editable must name at least one file that patches may change")
    overlap = set(files.editable) & set(files.protected)
    if overlap:
        raise ConfigError(f"[files] {sorted(overlap)} cannot be both editable and protected")
    return Config(
        root=root,
        lab=parse_options(LabSection, raw.get("lab"), "lab"),
        run=run,
        metric=metric,
        files=files,
        budget=parse_options(BudgetSection, raw.get("budget"), "budget"),
        promotion=parse_options(PromotionSection, raw.get("promotion"), "promotion"),
        search=parse_options(SearchSection, raw.get("search"), "search"),
        backend=backend or "local",
        backend_options=backend_options,
        llm=llm,
        llm_options=llm_options,
        paper_sources=list(sources),
        paper_options=paper_options,
        metric_store=store or "parquet",
        metric_store_options=store_options,
        reporter=dict(raw.get("reporter", {}) or {}),
        raw=dict(raw),
    )


def load_config(root: Path | str) -> Config:
    """Read and validate ``<root>/autolab.toml``."""
    root = Path(root).resolve()
    path = root / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"no {CONFIG_FILE} in {root}; run `autolab init {root}` first")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, root)

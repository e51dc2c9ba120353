"""The job protocol: what a run is asked to do (:class:`RunSpec`), what it reports
(:class:`RunResult`), and every ``AUTOLAB_*`` line a job prints, in one module.

Standard library only: this module travels with remote jobs. Line kinds, all on stdout:

- ``AUTOLAB_METRIC {"step": 10, "train_loss": 2.31}``: progress, printed by the lab's code;
- ``AUTOLAB_HARDWARE {...}``: where the run ran, printed by the runner;
- ``AUTOLAB_ERROR {"reason": ...}``: why the runner failed the run;
- ``AUTOLAB_RESULT {..., "sig": ...}``: the run's one result, printed by the runner after every
  process of the job is gone, signed with HMAC-SHA256 under a per-run key that never enters
  the job's environment or any file it can read. :func:`parse_result` accepts exactly one
  validly signed line; forged lines are reported, a second valid line is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

METRIC_PREFIX = "AUTOLAB_METRIC "
RESULT_PREFIX = "AUTOLAB_RESULT "
HARDWARE_PREFIX = "AUTOLAB_HARDWARE "
ERROR_PREFIX = "AUTOLAB_ERROR "
#: Every line kind, by name.
LINE_KINDS = {"METRIC": METRIC_PREFIX, "RESULT": RESULT_PREFIX, "HARDWARE": HARDWARE_PREFIX,
              "ERROR": ERROR_PREFIX}
#: Isolation levels, strongest first (see :mod:`autolab_core.sandbox`).
ISOLATION_LEVELS = ("bwrap", "landlock", "none")


class SpecError(ValueError):
    """A run spec or result that does not validate; the message names the field."""


class ResultError(ValueError):
    """No acceptable result in a job's output. ``forged`` lists rejected result lines."""

    def __init__(self, reason: str, forged: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.forged = tuple(forged)


# -- lines -------------------------------------------------------------------------------------
def _json_number(value: float) -> Any:
    # JSON has no NaN/Inf; keep them as strings so a NaN is reported, not lost.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def format_line(kind: str, payload: Mapping[str, Any]) -> str:
    """``AUTOLAB_<KIND> {json}`` for one of :data:`LINE_KINDS`."""
    if kind not in LINE_KINDS:
        raise ValueError(f"unknown line kind {kind!r}; one of {sorted(LINE_KINDS)}")
    return LINE_KINDS[kind] + json.dumps(dict(payload), separators=(",", ":"), sort_keys=True)


def parse_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``(kind, payload)`` for an ``AUTOLAB_*`` line that starts the line, else None."""
    for kind, prefix in LINE_KINDS.items():
        if line.startswith(prefix):
            try:
                payload = json.loads(line[len(prefix):])
            except ValueError:
                return None
            return (kind, payload) if isinstance(payload, dict) else None
    return None


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
        payload = json.loads(line[start + len(METRIC_PREFIX):])
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


# -- the run spec ------------------------------------------------------------------------------
def _strs(name: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"run spec field {name!r} must be a list of strings, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class RunSpec:
    """What the runner does for one run. Built by the orchestrator, read from
    ``AUTOLAB_RUN_SPEC`` (JSON). Fields missing from an older spec dict take their defaults.

    ``protected``/``eval_hash``: the evaluation code and its hash on main; ``protected_data``
    (globs) and ``protected_data_hash``: the evaluation data pinned at lab init; ``python``:
    the interpreter lab commands run with (default: the runner's own); ``env``: the lab's
    ``[run] env``; ``passthrough``: extra variable names lab code may see; ``isolation``:
    ``auto`` (the strongest sandbox available) or a level, ``none`` when absent (today's spec
    predates the sandbox: the loop opts in); ``network``: False cuts the job off the network
    where the sandbox can; ``hide``: absolute paths lab code must not see (the lab's state)."""

    experiment_id: str
    train: list[str]
    metric: str
    eval: list[str] | None = None
    protected: list[str] = field(default_factory=list)
    eval_hash: str | None = None
    protected_data: list[str] = field(default_factory=list)
    protected_data_hash: str | None = None
    pattern: str | None = None
    results_file: str = "result.json"
    output_dir: str = ".autolab-out"
    seed_env: str = "AUTOLAB_SEED"
    seed: int = 0
    attempt: int = 1
    python: str | None = None
    env: dict[str, str] | None = None
    passthrough: list[str] = field(default_factory=list)
    isolation: str = "none"
    network: bool = True
    hide: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.experiment_id or not isinstance(self.experiment_id, str):
            raise SpecError("run spec needs a non-empty 'experiment_id'")
        if not self.train:
            raise SpecError("run spec field 'train' must name the training command")
        for name in ("train", "protected", "protected_data", "passthrough", "hide"):
            _strs(name, getattr(self, name))
        if self.eval is not None:
            _strs("eval", self.eval)
        if self.eval is None and not self.pattern:
            raise SpecError("run spec needs 'eval' (a protected evaluation) or a metric 'pattern'")
        if self.protected and not self.eval_hash:
            raise SpecError("run spec lists 'protected' files but no 'eval_hash' to check them")
        if self.protected_data and not self.protected_data_hash:
            raise SpecError("run spec lists 'protected_data' but no pinned 'protected_data_hash'")
        if self.isolation not in ("auto", *ISOLATION_LEVELS):
            raise SpecError(f"run spec 'isolation' must be 'auto' or one of {ISOLATION_LEVELS}")
        if self.output_dir.startswith("/") or ".." in self.output_dir.split("/"):
            raise SpecError("run spec 'output_dir' must be a relative path inside the checkout")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SpecError(f"run spec 'seed' must be an integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """Validate ``data`` (today's ``job_spec`` dict or a newer one); unknown keys are an
        error that names them, so a typo never silently drops a protection."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"unknown run spec field(s) {unknown}; known: {sorted(names)}")
        values = {k: v for k, v in data.items() if v is not None or k in ("eval", "env")}
        for key in ("train", "eval", "protected", "protected_data", "passthrough", "hide"):
            if isinstance(values.get(key), tuple):
                values[key] = list(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise SpecError(f"run spec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"run spec is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SpecError("run spec must be a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# -- the run result ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """The one result of a run, as the runner signed it. CPU seconds cover every process the
    phase started (reaped by the runner), not just the first one."""

    experiment_id: str
    metric: str
    value: float
    seed: int = 0
    attempt: int = 1
    train_seconds: float | None = None
    train_cpu_seconds: float | None = None
    eval_seconds: float | None = None
    eval_cpu_seconds: float | None = None
    eval_hash: str | None = None
    data_hash: str | None = None
    trusted: bool = True
    isolation: str = "none"
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.value, int | float) or isinstance(self.value, bool):
            raise SpecError(f"result 'value' must be a number, got {self.value!r}")
        if self.isolation not in ISOLATION_LEVELS:
            raise SpecError(f"result 'isolation' must be one of {ISOLATION_LEVELS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise SpecError(f"result: {exc}") from None


# -- signing -----------------------------------------------------------------------------------
def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(payload), separators=(",", ":"), sort_keys=True).encode()


def sign(payload: Mapping[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of ``payload`` (canonical JSON) under ``key``."""
    if not key:
        raise ValueError("an empty key signs nothing; the runner needs the run's result key")
    return hmac.new(key, _canonical(payload), hashlib.sha256).hexdigest()


def derive_run_key(master: bytes, experiment_id: str, attempt: int) -> bytes:
    """The result key of one attempt of one run (hex), derived from the lab's master key, so
    the orchestrator can check a result after a restart without storing per-run keys and a
    retried attempt never accepts the line of an earlier one."""
    if not master:
        raise ValueError("the master result key is empty")
    msg = f"autolab-result:{experiment_id}:{attempt}".encode()
    return hmac.new(master, msg, hashlib.sha256).hexdigest().encode()


def format_signed_result(result: RunResult, key: bytes,
                         extra_fields: Mapping[str, Any] | None = None) -> str:
    """The runner's ``AUTOLAB_RESULT`` line: the result, plus ``extra_fields`` (e.g. a legacy
    nonce), signed over everything but ``sig``."""
    payload = {**result.to_dict(), **(extra_fields or {})}
    return format_line("RESULT", {**payload, "sig": sign(payload, key)})


@dataclass(frozen=True)
class ResultScan:
    """Every result line in a log: the validly signed ones and the rejected (forged) ones."""

    valid: tuple[RunResult, ...]
    forged: tuple[str, ...]


def scan_results(log_text: str, key: bytes, experiment_id: str | None = None) -> ResultScan:
    """Sort the ``AUTOLAB_RESULT`` lines of ``log_text`` into valid and forged."""
    valid: list[RunResult] = []
    forged: list[str] = []
    for line in log_text.splitlines():
        start = line.find(RESULT_PREFIX)
        if start < 0:
            continue
        parsed = parse_line(line[start:])
        payload = parsed[1] if parsed else None
        sig = payload.pop("sig", None) if payload else None
        if (payload is None or not isinstance(sig, str) or not key
                or not hmac.compare_digest(sig, sign(payload, key))):
            forged.append(line[:1000])
            continue
        try:
            result = RunResult.from_dict(payload)
        except SpecError:
            forged.append(line[:1000])
            continue
        if experiment_id is not None and result.experiment_id != experiment_id:
            forged.append(line[:1000])
            continue
        valid.append(result)
    return ResultScan(tuple(valid), tuple(forged))


def parse_result(log_text: str, key: bytes, experiment_id: str | None = None) -> RunResult:
    """The run's one signed result. Raises :class:`ResultError` when there is none or more
    than one (a replayed line is tampering); ``ResultError.forged`` lists rejected lines so
    the caller can record them."""
    scan = scan_results(log_text, key, experiment_id)
    if len(scan.valid) > 1:
        raise ResultError(f"{len(scan.valid)} signed result lines; exactly one is accepted "
                          "(a duplicate means the result channel was tampered with)", scan.forged)
    if not scan.valid:
        why = (f"{len(scan.forged)} result line(s) with no valid signature (forged)"
               if scan.forged else "the job printed no result line")
        raise ResultError(f"no signed result: {why}", scan.forged)
    return scan.valid[0]


# -- legacy (nonce in the payload, last line wins); kept for autolab_core.metriclines --------
def format_result_line(payload: Mapping[str, Any]) -> str:
    return RESULT_PREFIX + json.dumps(dict(payload), separators=(",", ":"), sort_keys=True)


def find_result(text: str, nonce: str) -> dict[str, Any] | None:
    """The last result line in ``text`` that carries ``nonce``, parsed, or None. Legacy:
    use :func:`parse_result`, which a job cannot forge."""
    found = None
    for line in text.splitlines():
        start = line.find(RESULT_PREFIX)
        if start < 0:
            continue
        try:
            payload = json.loads(line[start + len(RESULT_PREFIX):])
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("nonce") == nonce:
            found = payload
    return found

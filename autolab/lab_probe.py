"""Run a lab's training once, briefly, and recognise the metrics it prints.

Used by ``autolab init --probe``. Recognised lines (the last value of each metric counts):
``val_bpb: 0.99``, ``step 200: train loss 1.9, val loss 2.0``, ``val_loss=1.23``,
``| valid acc 0.81 |`` and JSON lines such as ``{"epoch": 3, "val_loss": 1.2}``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from autolab_core.config import resolve_python
from autolab_core.secrets import job_env, scrub

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
#: Words that make a printed number a metric (not a step, a time or a learning rate).
_METRIC_WORD = re.compile(r"loss|bpb|bpc|ppl|perplexity|acc|accuracy|f1|auc|bleu|rouge|score|"
                          r"reward|error|err|mse|mae|rmse|nll", re.IGNORECASE)
_MAXIMIZE = re.compile(r"acc|f1|auc|bleu|rouge|score|reward|top1|top5|map\b", re.IGNORECASE)
_HELD_OUT = re.compile(r"^(val|valid|validation|eval|test|dev)|[ _](val|valid|eval|test)", re.IGNORECASE)
_PAIR = re.compile(rf"(?<![\w.])([A-Za-z][\w/.-]*(?: [A-Za-z][\w/.-]*)?)\s*[:=]?\s*({NUMBER})(?![\w.])")
_SOURCE_PRINT = re.compile(r"""["'][^"'\n]*?\b((?:val|valid|eval|test)[ _]?(?:loss|bpb|bpc|acc|"""
                           r"""accuracy|ppl|perplexity))\b\s*([:=]?)\s*\{""", re.IGNORECASE)


@attrs.frozen
class MetricGuess:
    """A metric recognised in the output, with the ``[metric]`` settings that read it."""

    name: str  # as printed: "val loss", "val_bpb"
    pattern: str
    direction: str
    last: float | None  # the last value printed (None when guessed from the source)
    json_key: bool = False

    @property
    def config_name(self) -> str:
        return re.sub(r"\W+", "_", self.name).strip("_").lower()


@attrs.frozen
class ProbeResult:
    argv: tuple[str, ...]
    returncode: int | None  # None: stopped at the time limit
    seconds: float
    lines: tuple[str, ...]  # the output's last lines, secrets scrubbed

    @property
    def finished(self) -> bool:
        return self.returncode == 0


def metric_values(lines: Iterable[str]) -> dict[str, tuple[list[float], bool]]:
    """Metric name -> (every value printed, whether it came from JSON), in order of appearance."""
    found: dict[str, tuple[list[float], bool]] = {}
    for line in lines:
        text = line.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict):
                for key, value in data.items():
                    if (isinstance(value, int | float) and not isinstance(value, bool)
                            and _METRIC_WORD.search(key)):
                        found.setdefault(key, ([], True))[0].append(float(value))
                continue
        for segment in re.split(r"[,|;\t]", text):
            for match in _PAIR.finditer(segment):
                key = match.group(1).strip()
                words = key.split(" ")
                if len(words) == 2 and not _METRIC_WORD.search(words[1]):
                    key = words[1]  # "step 10" style prefixes are not part of the name
                if _METRIC_WORD.search(key) and not re.search(r"\blr\b|time|ms$", key, re.I):
                    found.setdefault(key, ([], False))[0].append(float(match.group(2)))
    return found


def pattern_for(name: str, json_key: bool = False) -> str:
    """A regex whose first group is the value printed after ``name`` (not after a longer name
    that ends with it: ``loss`` does not match ``train loss``)."""
    if json_key:
        return rf'"{re.escape(name)}"\s*:\s*({NUMBER})'
    return rf"(?<![\w.])(?<![A-Za-z] ){re.escape(name).replace(chr(92) + ' ', ' ')}\s*[:=]?\s*({NUMBER})"


def guess_metrics(lines: Sequence[str]) -> list[MetricGuess]:
    """Every recognised metric, the most likely promotion metric first: held-out before
    training numbers, bits per byte / loss before accuracy-like scores."""
    out = []
    for name, (values, from_json) in metric_values(lines).items():
        out.append(MetricGuess(name=name, pattern=pattern_for(name, from_json),
                               direction="maximize" if _MAXIMIZE.search(name) else "minimize",
                               last=values[-1], json_key=from_json))
    return sorted(out, key=_rank)


def _rank(guess: MetricGuess) -> tuple[int, int]:
    kinds = ("bpb", "bpc", "loss", "nll", "ppl", "perplexity")
    kind = next((i for i, k in enumerate(kinds) if k in guess.name.lower()), len(kinds))
    return (0 if _HELD_OUT.search(guess.name) else 1, kind)


def guess_from_source(source: str) -> MetricGuess | None:
    """A held-out metric named in a print format string (``f"val loss {x:.4f}"``), without
    running anything."""
    match = _SOURCE_PRINT.search(source)
    if not match:
        return None
    name = match.group(1)
    return MetricGuess(name=name, pattern=pattern_for(name),
                       direction="maximize" if _MAXIMIZE.search(name) else "minimize", last=None)


def probe(root: Path, argv: Sequence[str], time_limit: float, keep_lines: int = 400,
          python: str | None = None) -> ProbeResult:
    """Run ``argv`` in ``root`` once, as a job would (allow-listed environment, seed 0, the
    directory of ``python`` (``[run] python``; default: this interpreter) first on PATH),
    stopping it after ``time_limit`` seconds."""
    bin_dir = os.path.dirname(resolve_python(python))
    with tempfile.TemporaryDirectory(prefix="autolab-probe-") as out:
        env = job_env(extra={"AUTOLAB_SEED": "0", "AUTOLAB_OUTPUT_DIR": out,
                             "PYTHONUNBUFFERED": "1"})
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        start = time.monotonic()
        with subprocess.Popen(list(argv), cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              start_new_session=True) as proc:
            try:
                output, _ = proc.communicate(timeout=time_limit)
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
                code = None
        seconds = time.monotonic() - start
    lines = scrub(output or "").splitlines()[-keep_lines:]
    return ProbeResult(argv=tuple(argv), returncode=code, seconds=seconds, lines=tuple(lines))

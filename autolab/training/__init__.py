"""The reference CPU lab and the metric helper training scripts use.

``log(step, **metrics)`` prints one ``AUTOLAB_METRIC`` line. ``create_reference_lab(dest)``
copies the tiny byte-level GPT lab that ``autolab demo`` runs. This module imports nothing
heavy (no torch), so any training script can use ``log`` cheaply.
"""

from __future__ import annotations

import ast
import importlib.resources
import lzma
import shutil
from pathlib import Path

from autolab_core.metriclines import format_metric_line

__all__ = ["create_reference_lab", "held_out_bytes", "log", "reference_lab_path", "set_constants"]

_LAB_FILES = ("train.py", "prepare.py", "autolab.toml", "README.md")
#: The held-out file of the lab and how it is cut from the corpus (prepare.py pins its hash).
VAL_FILE, VAL_FRACTION, EVAL_WINDOWS, EVAL_CONTEXT = "data/val.bin", 0.05, 1024, 64


def log(step: int, **metrics: float) -> None:
    """Print ``AUTOLAB_METRIC {"step": step, ...}`` and flush, for the orchestrator to read."""
    print(format_metric_line(step, metrics), flush=True)


def reference_lab_path() -> Path:
    """The directory holding the shipped reference lab files."""
    return Path(str(importlib.resources.files(__name__).joinpath("reference_lab")))


def _literal_spans(source: str) -> dict[str, ast.expr]:
    spans: dict[str, ast.expr] = {}
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            spans[node.targets[0].id] = node.value
    return spans


def set_constants(source: str, overrides: dict[str, object]) -> str:
    """``source`` with top-level ``NAME = <literal>`` values replaced by ``overrides``.

    Only literal constants (numbers, bools, strings) can be set; anything else raises
    ``ValueError`` naming the constants that can be.
    """
    values = _literal_spans(source)
    literals = sorted(n for n, v in values.items() if isinstance(v, ast.Constant)
                      or (isinstance(v, ast.UnaryOp) and isinstance(v.operand, ast.Constant)))
    lines = source.splitlines(keepends=True)
    edits = []
    for name, value in overrides.items():
        if name not in literals:
            raise ValueError(f"cannot set {name!r}: not a top-level literal constant in "
                             f"train.py; settable: {', '.join(literals)}")
        if not isinstance(value, bool | int | float | str):
            raise ValueError(f"{name}: value must be a number, bool or string, got {value!r}")
        node = values[name]
        edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, value))
    for lineno, col, end_lineno, end_col, value in sorted(edits, key=lambda e: e[:2], reverse=True):
        if lineno != end_lineno:
            raise ValueError(f"constant on line {lineno} spans several lines; edit it by hand")
        # ast offsets are UTF-8 byte offsets
        line = lines[lineno - 1].encode()
        lines[lineno - 1] = (line[:col] + repr(value).encode() + line[end_col:]).decode()
    return "".join(lines)


def held_out_bytes() -> bytes:
    """The reference lab's scored validation windows: the first ``EVAL_WINDOWS`` windows of
    ``EVAL_CONTEXT + 1`` bytes of the last ``VAL_FRACTION`` of the corpus."""
    packed = importlib.resources.files(__name__).joinpath("data/shakespeare.txt.xz")
    raw = lzma.decompress(packed.read_bytes())
    start = int(len(raw) * (1 - VAL_FRACTION))
    return raw[start : start + EVAL_WINDOWS * (EVAL_CONTEXT + 1)]


def create_reference_lab(dest: Path, *, overrides: dict[str, object] | None = None) -> Path:
    """Copy the reference lab into ``dest`` (created if needed) and return ``dest``.

    ``overrides`` rewrites top-level constants of ``train.py``, e.g. ``{"STEPS": 200}``.
    It does not create a git repository; ``autolab init`` does that. The scored held-out
    windows go to ``data/val.bin`` (``[files] protected_data``).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    source = reference_lab_path()
    for name in _LAB_FILES:
        shutil.copyfile(source / name, dest / name)
    (dest / VAL_FILE).parent.mkdir(exist_ok=True)
    (dest / VAL_FILE).write_bytes(held_out_bytes())
    if overrides:
        train = dest / "train.py"
        train.write_text(set_constants(train.read_text(), overrides))
    return dest

"""Knobs in Python files, read with :mod:`ast`.

Three forms: module-level assignments of any case (``LR = 1e-3``, ``learning_rate = 6e-4``,
nanoGPT-style config files), ``argparse`` defaults (``add_argument("--lr", default=1e-3)``, named
by their ``dest``), and defaults of dataclass / attrs / pydantic config fields (named
``Class.field``). Only literal values count: numbers, booleans, strings, tuples of them.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from autolab.agents.knobs.model import Knob, choices_from_comment, line_of
from autolab_core.errors import PatchError

_CONFIG_CLASS = re.compile(r"dataclass|define|frozen|mutable|attr\.s|attrs|BaseModel|BaseSettings")


def literal(node: ast.AST) -> Any:
    """The node's value when it is a scalar literal or a tuple of them, else None."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple) and value and all(isinstance(v, bool | int | float | str) for v in value):
        return value
    return None


class _Spans:
    """Character offsets from ast's (line, UTF-8 byte column) positions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno or node.lineno,  # type: ignore[attr-defined]
                          node.end_col_offset or 0)  # type: ignore[attr-defined]
        return start, end

    def comment(self, lineno: int) -> str:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return line.split("#", 1)[1] if "#" in line else ""


def _knob(spans: _Spans, name: str, node: ast.expr, file: str, form: str,
          choices: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> Knob | None:
    value = literal(node)
    if value is None:
        return None
    start, end = spans.span(node)
    if isinstance(value, str) and not choices:
        choices = choices_from_comment(spans.comment(node.end_lineno or node.lineno))
    return Knob(name=name, value=value, file=file, start=start, end=end,
                line=line_of(spans.source, start), text=spans.source[start:end], form=form,
                choices=choices, flags=flags)


def python_knobs(source: str, file: str) -> list[Knob]:
    """Every knob of one Python file, in file order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise PatchError(f"{file} does not parse: {exc}") from None
    spans = _Spans(source)
    knobs: list[Knob] = []
    for node in tree.body:
        target, value = _assignment(node)
        if target is not None and value is not None and not target.startswith("_"):
            knob = _knob(spans, target, value, file, "module")
            if knob:
                knobs.append(knob)
        if isinstance(node, ast.ClassDef) and _is_config_class(node):
            knobs += _field_knobs(spans, node, file)
    knobs += _argparse_knobs(spans, tree, file)
    return sorted(knobs, key=lambda k: k.start)


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _is_config_class(node: ast.ClassDef) -> bool:
    names = [ast.unparse(d) for d in node.decorator_list] + [ast.unparse(b) for b in node.bases]
    return any(_CONFIG_CLASS.search(n) for n in names)


def _field_knobs(spans: _Spans, cls: ast.ClassDef, file: str) -> list[Knob]:
    out = []
    for node in cls.body:
        name, value = _assignment(node)
        if name is None or value is None or name.startswith("_"):
            continue
        if isinstance(value, ast.Call):  # field(default=...), attrs.field(default=...), Field(...)
            value = next((kw.value for kw in value.keywords if kw.arg == "default"), None)
            if value is None:
                continue
        knob = _knob(spans, f"{cls.name}.{name}", value, file, "field")
        if knob:
            out.append(knob)
    return out


def _argparse_knobs(spans: _Spans, tree: ast.Module, file: str) -> list[Knob]:
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        flags = tuple(a.value for a in node.args
                      if isinstance(a, ast.Constant) and isinstance(a.value, str))
        if not flags or not all(f.startswith("-") for f in flags):
            continue  # positional arguments are not knobs
        keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        if "default" not in keywords:
            continue
        dest_node = keywords.get("dest")
        long = next((f for f in flags if f.startswith("--")), flags[0])
        dest = (dest_node.value if isinstance(dest_node, ast.Constant) and isinstance(dest_node.value, str)
                else long.lstrip("-").replace("-", "_"))
        choices: tuple[str, ...] = ()
        if "choices" in keywords:
            listed = literal(keywords["choices"]) if not isinstance(keywords["choices"], ast.List) \
                else literal(ast.Tuple(elts=keywords["choices"].elts, ctx=ast.Load()))
            if isinstance(listed, tuple):
                choices = tuple(str(c) for c in listed)
        knob = _knob(spans, dest, keywords["default"], file, "argparse", choices, flags)
        if knob:
            out.append(knob)
    return out

"""Knobs in YAML, JSON and TOML config files, with the exact span of each scalar value.

Nested keys are joined with dots (``model.n_layer``), as Hydra / OmegaConf write overrides.
The readers are small on purpose: they find scalar values and where they are written, so an
edit replaces that text only and the file keeps its comments, order and layout. Lists,
multi-line values, anchors and interpolations (``${...}``) are not knobs.

Hydra config groups: a YAML file whose first lines say ``# @package NAME`` has its keys under
``NAME`` (``_global_``: none); a file in a sub-folder of the folder that holds the primary config
(a YAML file with a ``defaults:`` list) has its keys under that sub-folder's path, as Hydra does.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from autolab.agents.knobs.model import Knob, choices_from_comment, line_of

CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def config_knobs(source: str, file: str, files: Mapping[str, str] | None = None) -> list[Knob]:
    """Every scalar knob of one config file (chosen by its suffix)."""
    if file.endswith((".yaml", ".yml")):
        return yaml_knobs(source, file, hydra_package(source, file, files or {}))
    if file.endswith(".json"):
        return json_knobs(source, file)
    if file.endswith(".toml"):
        return toml_knobs(source, file)
    return []


def _make(source: str, file: str, form: str, path: list[str], value: Any, start: int, end: int,
          comment: str = "") -> Knob | None:
    if value is None or not isinstance(value, bool | int | float | str):
        return None
    if isinstance(value, str) and "${" in value:
        return None  # an interpolation, not a setting
    choices = choices_from_comment(comment) if isinstance(value, str) else ()
    return Knob(name=".".join(path), value=value, file=file, start=start, end=end,
                line=line_of(source, start), text=source[start:end], form=form, choices=choices)


# -- YAML ------------------------------------------------------------------------------------
_YAML_KEY = re.compile(r"""^(\s*)([A-Za-z_][\w.-]*|"[^"]+"|'[^']+')\s*:(?:\s+|$)""")
_INT = re.compile(r"^[-+]?[0-9][0-9_]*$")
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$")


def yaml_scalar(text: str) -> Any:
    """The value of a YAML scalar as OmegaConf reads it (core schema); None for null."""
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("null", "~", ""):
        return None
    if _INT.match(text):
        return int(text.replace("_", ""))
    if _FLOAT.match(text):
        return float(text.replace("_", ""))
    return text


def _split_comment(rest: str) -> tuple[str, str]:
    """(value text, comment) of what follows ``key:``; a ``#`` inside quotes is not a comment."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"" and not rest[:i].strip():
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].rstrip(), rest[i + 1:]
    return rest.rstrip(), ""


def hydra_package(source: str, file: str, files: Mapping[str, str]) -> list[str]:
    """The key prefix Hydra gives this file's keys (see the module docstring)."""
    for line in source.splitlines()[:5]:
        match = re.match(r"^#\s*@package\s+(\S+)", line)
        if match:
            return [] if match.group(1) == "_global_" else match.group(1).split(".")
    path = PurePosixPath(file)
    for other, text in files.items():
        if other == file or not other.endswith((".yaml", ".yml")):
            continue
        if re.search(r"^defaults\s*:", text, re.MULTILINE):
            root = PurePosixPath(other).parent
            if root in path.parents and path.parent != root:
                return list(path.parent.relative_to(root).parts)
    return []


def yaml_knobs(source: str, file: str, prefix: list[str] | None = None) -> list[Knob]:
    """Scalars of block mappings; list items, block scalars and flow collections are skipped."""
    knobs: list[Knob] = []
    stack: list[tuple[int, str]] = []
    skip_deeper: int | None = None  # indent of a list or block scalar whose lines are skipped
    offset = 0
    for line in source.splitlines(keepends=True):
        here, offset = offset, offset + len(line)
        body = line.rstrip("\r\n")
        stripped = body.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        indent = len(body) - len(body.lstrip(" "))
        if skip_deeper is not None:
            if indent > skip_deeper or (indent == skip_deeper and stripped.startswith("-")):
                continue
            skip_deeper = None
        if stripped.startswith("-"):
            skip_deeper = indent
            continue
        match = _YAML_KEY.match(body)
        if not match:
            continue
        key = match.group(2).strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value_text, comment = _split_comment(body[match.end():])
        if not value_text:
            stack.append((indent, key))
            continue
        if value_text[0] in "|>[{&*!":
            skip_deeper = indent if value_text[0] in "|>" else None
            continue
        try:
            value = yaml_scalar(value_text)
        except ValueError:
            continue
        start = here + match.end()
        path = [*(prefix or []), *(k for _, k in stack), key]
        knob = _make(source, file, "yaml", path, value, start, start + len(value_text), comment)
        if knob:
            knobs.append(knob)
    return knobs


# -- JSON ------------------------------------------------------------------------------------
_JSON_SCALAR = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null')
_WS = re.compile(r"\s*")


def json_knobs(source: str, file: str) -> list[Knob]:
    """Scalars of nested objects (arrays are not descended)."""
    try:
        json.loads(source)
    except ValueError:
        return []
    knobs: list[Knob] = []

    def skip(i: int) -> int:
        match = _WS.match(source, i)
        return match.end() if match else i

    def value(i: int, path: list[str] | None) -> int:
        i = skip(i)
        if source[i] == "{":
            i = skip(i + 1)
            while source[i] != "}":
                key_match = _JSON_SCALAR.match(source, i)
                assert key_match is not None
                key, i = json.loads(key_match.group()), key_match.end()
                i = skip(i) + 1  # the colon
                i = skip(value(i, None if path is None else [*path, key]))
                if source[i] == ",":
                    i = skip(i + 1)
            return i + 1
        if source[i] == "[":
            i = skip(i + 1)
            while source[i] != "]":
                i = skip(value(i, None))
                if source[i] == ",":
                    i = skip(i + 1)
            return i + 1
        match = _JSON_SCALAR.match(source, i)
        assert match is not None  # the document parsed above
        if path is not None:
            knob = _make(source, file, "json", path, json.loads(match.group()), i, match.end())
            if knob:
                knobs.append(knob)
        return match.end()

    value(0, [])
    return knobs


# -- TOML ------------------------------------------------------------------------------------
_TOML_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_TOML_KEY = re.compile(rf"^\s*({_TOML_PART}(?:\s*\.\s*{_TOML_PART})*)\s*=\s*")


def _toml_path(text: str) -> list[str]:
    return [part.strip().strip("'\"") for part in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)]


def toml_knobs(source: str, file: str) -> list[Knob]:
    """Scalars of tables and dotted keys (array tables and multi-line values are skipped)."""
    try:
        tomllib.loads(source)
    except tomllib.TOMLDecodeError:
        return []
    knobs: list[Knob] = []
    table: list[str] | None = []
    offset = 0
    open_multiline = ""
    for line in source.splitlines(keepends=True):
        here, offset = offset, offset + len(line)
        body = line.rstrip("\r\n")
        if open_multiline:
            if open_multiline in body:
                open_multiline = ""
            continue
        stripped = body.strip()
        if stripped.startswith("[["):
            table = None
            continue
        if stripped.startswith("["):
            table = _toml_path(stripped[1:stripped.index("]")])
            continue
        match = _TOML_KEY.match(body)
        if not match or table is None:
            continue
        rest = body[match.end():]
        for quote in ('"""', "'''"):
            if rest.startswith(quote) and rest.count(quote) == 1:
                open_multiline = quote
        value_text, value = _toml_value(rest)
        if value_text is None:
            if rest.startswith("[") and "]" not in rest:
                open_multiline = "]"
            continue
        start = here + match.end()
        comment = rest[len(value_text):].partition("#")[2]
        knob = _make(source, file, "toml", [*table, *_toml_path(match.group(1))], value,
                     start, start + len(value_text), comment)
        if knob:
            knobs.append(knob)
    return knobs


def _toml_value(rest: str) -> tuple[str | None, Any]:
    """The shortest prefix of ``rest`` ending before a ``#`` (or at the end) that is one TOML
    value, and that value: the comment is never part of the value text."""
    cuts = [i for i, ch in enumerate(rest) if ch == "#"] + [len(rest)]  # shortest first
    for cut in cuts:
        text = rest[:cut].rstrip()
        if not text:
            continue
        try:
            return text, tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            continue
    return None, None

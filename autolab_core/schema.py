"""A validator for the small JSON-schema subset autolab's prompts use, and JSON extraction.

Supported keywords: ``type`` (object, array, string, number, integer, boolean, null, or a list
of them), ``properties``, ``required``, ``additionalProperties: false``, ``items``, ``enum``,
``maxLength``, ``minLength``, ``maxItems``, ``minItems``. Unknown keywords are ignored, so a
schema written for a provider's strict mode validates here too. No dependency: the subset is
small, and the error messages are written to be fed back to a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _TYPES.get(name)
    return expected is None or isinstance(value, expected)


def validate(data: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Every way ``data`` breaks ``schema``, as ``"<json path>: <problem>"``; empty when valid."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not any(_type_ok(data, k) for k in kinds):
            got = type(data).__name__ if data is not None else "null"
            return [f"{path}: expected {' or '.join(kinds)}, got {got}"]
    if "enum" in schema and data not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in list(schema["enum"])[:8])
        more = " ..." if len(schema["enum"]) > 8 else ""
        errors.append(f"{path}: {_short(data)} is not one of the allowed values ({allowed}{more})")
    if isinstance(data, str):
        if "maxLength" in schema and len(data) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters ({len(data)})")
        if "minLength" in schema and len(data) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if isinstance(data, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in data:
                errors.append(f"{path}: missing required property {key!r}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(data) - set(props))
            if extra:
                errors.append(f"{path}: unexpected properties {extra}; allowed: {sorted(props)}")
        for key, sub in props.items():
            if key in data:
                errors.extend(validate(data[key], sub, f"{path}.{key}"))
    if isinstance(data, list):
        if "maxItems" in schema and len(data) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items ({len(data)})")
        if "minItems" in schema and len(data) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items ({len(data)})")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(data):
                errors.extend(validate(item, items, f"{path}[{i}]"))
    return errors


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def extract_json(text: str) -> Any:
    """The JSON value in ``text``: the whole text, a fenced block, or the first balanced object.

    Raises ``ValueError`` with a message fit to feed back to the model.
    """
    stripped = text.strip()
    if stripped.startswith("```"):
        body = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = body.rsplit("```", 1)[0].strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    start = stripped.find("{")
    while start >= 0:
        end = _balanced_end(stripped, start)
        if end is None:
            break
        try:
            return json.loads(stripped[start : end + 1])
        except ValueError:
            start = stripped.find("{", start + 1)
    raise ValueError(f"the answer is not valid JSON (it began {stripped[:80]!r})")


def _balanced_end(text: str, start: int) -> int | None:
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


_LIMITS = ("maxLength", "minLength", "maxItems", "minItems")


def portable_schema(schema: Any) -> Any:
    """``schema`` without length and count limits, which hosted strict modes reject.

    Answers are still validated locally against the full schema.
    """
    if isinstance(schema, Mapping):
        return {k: portable_schema(v) for k, v in schema.items() if k not in _LIMITS}
    if isinstance(schema, list):
        return [portable_schema(v) for v in schema]
    return schema

"""Patch validation (the one place it happens), search/replace edits, and a smoke run.

:func:`validate_patch` is the single validator of a patch given as new file contents, used by
every patch writer's caller: only editable, unprotected files inside the lab, a change at all,
at most :attr:`PatchLimits.max_changed_lines` changed lines, and every changed Python file
still compiles. :class:`PatchLimits` is the single source of the limits (``[llm.worker]
max_changed_lines`` and ``max_edits`` in ``autolab.toml`` configure it).

An edit is ``{"file", "search", "replace"}``: ``search`` must occur exactly once in ``file``.
:func:`apply_edits` checks the edits themselves (how many, where, found exactly once) and then
runs :func:`validate_patch` on the result. Any failure raises :class:`PatchError` with a
reason written to be fed back to the model.
"""

from __future__ import annotations

import difflib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import attrs

from autolab_core.errors import PatchError
from autolab_core.validators import positive


@attrs.frozen
class PatchLimits:
    """How large one patch may be: the single source of these limits."""

    max_changed_lines: int = attrs.field(default=60, validator=positive)
    max_edits: int = attrs.field(default=4, validator=positive)


DEFAULT_LIMITS = PatchLimits()


@attrs.frozen
class Edit:
    file: str
    search: str
    replace: str

    def to_dict(self) -> dict[str, str]:
        """The ``Hypothesis.edits`` form."""
        return {"file": self.file, "search": self.search, "replace": self.replace}

    @classmethod
    def coerce(cls, item: Edit | Mapping[str, Any]) -> Edit:
        if isinstance(item, Edit):
            return item
        if not isinstance(item, Mapping):
            raise PatchError(f"an edit must be an object with file, search, replace; got {item!r}")
        missing = [k for k in ("file", "search", "replace") if not isinstance(item.get(k), str)]
        if missing:
            raise PatchError(f"an edit is missing {', '.join(missing)} (strings): {dict(item)!r}")
        return cls(item["file"], item["search"], item["replace"])


def changed_lines(old: str, new: str) -> int:
    """Lines removed plus lines added between ``old`` and ``new``."""
    return sum(
        1
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def _snippet(text: str, limit: int = 80) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return repr(first if len(first) <= limit else first[: limit - 3] + "...")


def _inside_lab(path: str) -> bool:
    parts = PurePosixPath(path)
    return bool(path) and not parts.is_absolute() and ".." not in parts.parts


def _check_files(paths: Sequence[str], editable: Sequence[str], protected: Sequence[str],
                 known: Mapping[str, str] | None, what: str) -> None:
    allowed = set(editable) - set(protected)
    for path in paths:
        if not _inside_lab(path):
            raise PatchError(f"{what}{path!r} is not a path inside the lab")
        if path in protected:
            raise PatchError(f"{what}{path} is protected and may not be changed; "
                             f"edit only: {', '.join(sorted(allowed))}")
        if path not in allowed or (known is not None and path not in known):
            valid = sorted(allowed & set(known)) if known is not None else sorted(allowed)
            raise PatchError(f"{what}{path!r} is not an editable file; edit only: "
                             + ", ".join(valid))


def validate_patch(
    old: Mapping[str, str],
    new: Mapping[str, str],
    editable: Sequence[str],
    *,
    protected: Sequence[str] = (),
    limits: PatchLimits = DEFAULT_LIMITS,
) -> dict[str, str]:
    """The files ``new`` really changes against ``old``; PatchError naming the problem.

    ``old`` and ``new`` map lab paths to full contents (a path missing from ``old`` is a new
    file). Checks: every path is editable, not protected and inside the lab; something
    changes; at most ``limits.max_changed_lines`` lines change; Python files compile.
    """
    _check_files(sorted(new), editable, protected, None, "")
    changed = {f: c for f, c in sorted(new.items()) if old.get(f) != c}
    if not changed:
        raise PatchError("the patch would change nothing (for an edit: replace must differ from search)")
    total = sum(changed_lines(old.get(f, ""), c) for f, c in changed.items())
    if total > limits.max_changed_lines:
        raise PatchError(
            f"the patch changes {total} lines; the limit is {limits.max_changed_lines}: make one "
            "smaller change"
        )
    for f, content in changed.items():
        if f.endswith(".py"):
            try:
                compile(content, f, "exec", dont_inherit=True)
            except SyntaxError as exc:
                line = (exc.text or "").strip()
                raise PatchError(
                    f"the edit breaks the syntax of {f}: {exc.msg} at line {exc.lineno}"
                    + (f": {line!r}" if line else "")
                ) from None
    return changed


def apply_edits(
    files: Mapping[str, str],
    edits: Sequence[Edit | Mapping[str, Any]],
    editable: Sequence[str],
    *,
    protected: Sequence[str] = (),
    limits: PatchLimits = DEFAULT_LIMITS,
) -> dict[str, str]:
    """The new full contents of every file the edits change; PatchError when invalid."""
    max_edits = limits.max_edits
    items = list(dict.fromkeys(Edit.coerce(e) for e in edits))  # a repeated edit counts once
    if not items:
        raise PatchError("no edits were given; give at least one search/replace edit")
    if len(items) > max_edits:
        raise PatchError(f"{len(items)} edits; at most {max_edits}: make one focused change")
    current = dict(files)
    touched: set[str] = set()
    for n, edit in enumerate(items, 1):
        _check_files([edit.file], editable, protected, current, f"edit {n}: ")
        if not edit.search:
            raise PatchError(f"edit {n}: the search text is empty; copy the lines to change")
        text = current[edit.file]
        count = text.count(edit.search)
        if count == 0:
            earlier = " (an earlier edit already changed it)" if edit.search in files[edit.file] else ""
            raise PatchError(
                f"edit {n}: the search text (starting {_snippet(edit.search)}) is not in "
                f"{edit.file}{earlier}; copy it exactly from the file, including indentation"
            )
        if count > 1:
            raise PatchError(
                f"edit {n}: the search text (starting {_snippet(edit.search)}) occurs {count} "
                f"times in {edit.file}; include neighbouring lines so it occurs once"
            )
        current[edit.file] = text.replace(edit.search, edit.replace, 1)
        touched.add(edit.file)
    new = {f: current[f] for f in sorted(touched)}
    return validate_patch(files, new, editable, protected=protected, limits=limits)


def diff(old_files: Mapping[str, str], new_files: Mapping[str, str]) -> str:
    """A unified diff of the changed files (for logs and conversations)."""
    out: list[str] = []
    for f in sorted(new_files):
        out.extend(difflib.unified_diff(
            old_files.get(f, "").splitlines(keepends=True),
            new_files[f].splitlines(keepends=True), f"a/{f}", f"b/{f}",
        ))
    return "".join(out)


@attrs.frozen
class SmokeResult:
    """What a short local run of a patched script showed. ``ok`` False means it crashed."""

    ok: bool
    returncode: int | None
    seconds: float
    output_tail: str
    reason: str = ""


def smoke_run(
    workdir: str | os.PathLike[str],
    command: Sequence[str],
    steps_env: Mapping[str, str],
    timeout: float,
    *,
    tail_chars: int = 4000,
) -> SmokeResult:
    """Run ``command`` in ``workdir`` briefly, with ``steps_env`` (e.g. a small step count).

    It catches crashes before a job goes to a paid or remote backend. Exiting 0 is a pass,
    and so is still running at ``timeout`` (it got past start-up): the process group is then
    killed. A non-zero exit is a failure whose ``reason`` quotes the last lines of output.
    """
    env = {**os.environ, **{k: str(v) for k, v in steps_env.items()}}
    start = time.monotonic()
    proc = subprocess.Popen(
        list(command), cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        tail = out.decode("utf-8", "replace")[-tail_chars:]
        return SmokeResult(True, None, time.monotonic() - start, tail,
                           f"still running after {timeout:g}s without crashing")
    seconds = time.monotonic() - start
    tail = out.decode("utf-8", "replace")[-tail_chars:]
    if proc.returncode == 0:
        return SmokeResult(True, 0, seconds, tail)
    last = "\n".join(tail.strip().splitlines()[-5:])
    return SmokeResult(False, proc.returncode, seconds, tail,
                       f"smoke run exited with code {proc.returncode} after {seconds:.1f}s:\n{last}")

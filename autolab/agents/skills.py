"""The LLM roles' prompts: one ``SKILL.md`` per role, in the upskill format.

A skill file has front matter with ``name`` and ``description`` and a Markdown body, which
is the role's system prompt::

    ---
    name: autolab-researcher
    description: Proposes testable, single-change hypotheses for an ML training script.
    ---
    You are the Researcher of an autonomous ML lab. ...

The defaults ship in ``autolab/agents/skills/<role>/SKILL.md``. A lab overrides one by
committing ``skills/<role>/SKILL.md`` at its root. ``autolab skills check [PATHS]`` validates
files: the name matches ``^[a-z0-9]+(-[a-z0-9]+)*$`` in at most 64 characters, and the
description has 1 to 1024 characters.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import attrs
import click

from autolab_core.errors import ConfigError

SKILLS_DIR = Path(__file__).parent / "skills"
NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
ROLES = ("researcher", "worker")


@attrs.frozen
class Skill:
    """A parsed skill: ``body`` is the system prompt."""

    name: str
    description: str
    body: str
    path: Path | None = None
    meta: dict[str, str] = attrs.field(factory=dict)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_front_matter(text: str) -> tuple[dict[str, str], str] | None:
    """``({key: value}, body)`` from ``---`` front matter, or None when there is none.

    Understands the YAML the skill format uses: ``key: value`` lines, quoted values, and
    block scalars (``key: >`` or ``key: |`` followed by indented lines).
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return None
    meta: dict[str, str] = {}
    key: str | None = None
    block: list[str] = []
    folded = False

    def flush() -> None:
        if key is not None and block:
            meta[key] = (" " if folded else "\n").join(s.strip() for s in block).strip()

    for line in lines[1:end]:
        if key is not None and (line.startswith((" ", "\t")) or not line.strip()):
            block.append(line)
            continue
        flush()
        key, block = None, []
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            continue
        value = value.strip()
        if value in (">", "|", ">-", "|-", ""):
            key, folded = name.strip(), value.startswith(">") or value == ""
        else:
            meta[name.strip()] = _unquote(value)
    flush()
    return meta, "\n".join(lines[end + 1 :]).strip() + "\n"


def parse_skill(text: str, path: Path | None = None) -> Skill:
    """A :class:`Skill` from a SKILL.md's text; ConfigError when it has no front matter."""
    parsed = parse_front_matter(text)
    where = str(path) if path else "skill"
    if parsed is None:
        raise ConfigError(
            f"{where}: no front matter; start the file with ---, name: <name>, "
            "description: <what it does>, --- and then the prompt"
        )
    meta, body = parsed
    return Skill(meta.get("name", ""), meta.get("description", ""), body, path, meta)


def skill_problems(skill: Skill) -> list[str]:
    """What is wrong with ``skill`` under the upskill rules; empty when it is valid."""
    problems = []
    if not skill.name:
        problems.append("front matter has no name")
    elif len(skill.name) > 64 or not NAME_PATTERN.match(skill.name):
        problems.append(
            f"name {skill.name!r} must be lowercase letters, digits and single hyphens "
            "(^[a-z0-9]+(-[a-z0-9]+)*$), at most 64 characters"
        )
    if not skill.description:
        problems.append("front matter has no description (1 to 1024 characters)")
    elif len(skill.description) > 1024:
        problems.append(f"description has {len(skill.description)} characters; the limit is 1024")
    if not skill.body.strip():
        problems.append("the body (the prompt) is empty")
    return problems


def skill_path(role: str, lab_root: Path | str | None = None) -> Path:
    """The lab's override ``<lab>/skills/<role>/SKILL.md`` if present, else the built-in file."""
    if lab_root is not None:
        override = Path(lab_root) / "skills" / role / "SKILL.md"
        if override.is_file():
            return override
    return SKILLS_DIR / role / "SKILL.md"


def load_skill(role: str, lab_root: Path | str | None = None) -> Skill:
    """The validated skill for ``role`` ("researcher" or "worker")."""
    path = skill_path(role, lab_root)
    if not path.is_file():
        raise ConfigError(
            f"no skill for role {role!r}: {path} is missing; roles with a built-in skill: "
            + ", ".join(ROLES)
        )
    skill = parse_skill(path.read_text(encoding="utf-8"), path)
    problems = skill_problems(skill)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems) + " (check with `autolab skills check`)")
    return skill


def _skill_files(paths: tuple[str, ...]) -> list[Path]:
    if not paths:
        found = sorted(SKILLS_DIR.glob("*/SKILL.md"))
        return found + sorted(Path("skills").glob("*/SKILL.md"))
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        files.extend(sorted(path.rglob("SKILL.md")) if path.is_dir() else [path])
    return files


@click.command("check")
@click.argument("paths", nargs=-1, type=click.Path())
def skills_check(paths: tuple[str, ...]) -> None:
    """Validate SKILL.md files (default: the built-in skills and ./skills/*/SKILL.md).

    PATHS may be files or folders (searched for SKILL.md). Exits 1 when any file is invalid.
    """
    files = _skill_files(paths)
    if not files:
        click.echo("no SKILL.md files found", err=True)
        sys.exit(1)
    bad = 0
    for file in files:
        try:
            problems = skill_problems(parse_skill(file.read_text(encoding="utf-8"), file))
        except (OSError, ConfigError) as exc:
            problems = [str(exc)]
        if problems:
            bad += 1
            for problem in problems:
                click.echo(f"{file}: {problem}")
        else:
            click.echo(f"{file}: ok")
    if bad:
        click.echo(f"{bad} of {len(files)} skill files have problems", err=True)
        sys.exit(1)

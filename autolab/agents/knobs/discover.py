"""All the knobs of a lab's editable files, and the ones its ``[run] command`` fixes.

argparse knobs are changed by editing their ``default=`` in place (the patch stays a change of
an editable file, like every other patch). A knob that the command also sets (``--lr 0.01``,
``--lr=0.01``, Hydra's ``model.n_layer=4``) would ignore that edit, so it is marked
``set_by`` and left alone; remove it from the command to let autolab change it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs

from autolab.agents.knobs.configfile import CONFIG_SUFFIXES, config_knobs
from autolab.agents.knobs.model import Knob, find, unique_names
from autolab.agents.knobs.python import python_knobs
from autolab_core.errors import PatchError

KNOB_SUFFIXES = (".py", *CONFIG_SUFFIXES)
_OVERRIDE = re.compile(r"^\+{0,2}([A-Za-z_][\w.]*)=(.*)$")


def find_knobs(files: Mapping[str, str], paths: Sequence[str] | None = None,
               command: Sequence[str] = ()) -> list[Knob]:
    """The knobs of ``paths`` (default: every file in ``files``), in path then file order;
    knobs the ``command`` argv overrides carry ``set_by``."""
    knobs: list[Knob] = []
    for path in paths if paths is not None else list(files):
        if path not in files:
            continue
        if path.endswith(".py"):
            knobs += python_knobs(files[path], path)
        elif path.endswith(CONFIG_SUFFIXES):
            knobs += config_knobs(files[path], path, files)
    knobs = unique_names(knobs)
    overrides = command_overrides(command)
    if overrides:
        knobs = [_mark(k, knobs, overrides) for k in knobs]
    return knobs


def _mark(knob: Knob, knobs: Sequence[Knob], overrides: Mapping[str, str]) -> Knob:
    for name, token in overrides.items():
        try:
            hit = find(name, knobs)
        except PatchError:  # ambiguous: leave it
            hit = None
        if hit is not None and hit.name == knob.name:
            return attrs.evolve(knob, set_by=token)
    return knob


def command_overrides(argv: Sequence[str]) -> dict[str, str]:
    """Names a command line sets -> the text that sets them: ``--lr 0.01``, ``--lr=0.01`` and
    Hydra / nanoGPT-configurator style ``key=value`` / ``+key=value``."""
    out: dict[str, str] = {}
    argv = list(argv)
    for i, token in enumerate(argv):
        if token.startswith("--") and len(token) > 2:
            name, sep, _ = token[2:].partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            if sep:
                out["--" + name] = token
            elif nxt and not nxt.startswith("-"):
                out["--" + name] = f"{token} {nxt}"
            continue
        match = _OVERRIDE.match(token)
        if match:
            out[match.group(1)] = token
    return out

"""Knobs: the settings of a lab that the explorer may change, wherever the project keeps them.

:mod:`.model` (what a knob is, compute markers, in-place edits), :mod:`.python` (module-level
assignments, argparse defaults, config-class fields), :mod:`.configfile` (YAML / JSON / TOML),
:mod:`.discover` (all knobs of the editable files, command overrides), :mod:`.explorer` (the
knob explorer and random search).
"""

from autolab.agents.knobs.discover import command_overrides, find_knobs
from autolab.agents.knobs.explorer import KnobExplorer, RandomSearch, moves
from autolab.agents.knobs.model import Knob, compute_kind, format_value, resolve, set_knob

__all__ = ["Knob", "KnobExplorer", "RandomSearch", "command_overrides", "compute_kind",
           "find_knobs", "format_value", "moves", "resolve", "set_knob"]

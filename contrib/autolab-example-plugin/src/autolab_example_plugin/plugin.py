"""The module named by the ``autolab`` entry point: it registers the plugin's classes.

autolab imports this module at start-up (``autolab plugins`` lists what it registered), so it
stays light: only the standard library and ``autolab_core``. A plugin that needs a heavy
library imports it inside the methods that use it.
"""

from __future__ import annotations

from autolab_core import hookimpl
from autolab_core.hookspecs import Register
from autolab_example_plugin.backend import SubprocessBackend
from autolab_example_plugin.notes import NotesSource


@hookimpl
def autolab_register_backends(register: Register) -> None:
    register(SubprocessBackend)


@hookimpl
def autolab_register_paper_sources(register: Register) -> None:
    register(NotesSource)

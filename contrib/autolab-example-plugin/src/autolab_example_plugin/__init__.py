"""An example third-party autolab plugin: ``example-subprocess`` and ``example-notes``."""

from autolab_example_plugin.backend import SubprocessBackend, SubprocessOptions
from autolab_example_plugin.notes import NotesOptions, NotesSource

__version__ = "0.1.0"
__all__ = ["NotesOptions", "NotesSource", "SubprocessBackend", "SubprocessOptions"]

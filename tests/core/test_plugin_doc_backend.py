"""The complete backend shown in docs/plugins.md: exactly that code, run through the contract.

The code block after the ``<!-- complete-backend -->`` marker is extracted from the document,
written to a module file, imported, and run through ``JobBackendContract`` with real
processes and real supervisors; a second test registers it through its own hook.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from autolab_core.errors import ConfigError
from autolab_core.plugins import PluginManager
from autolab_core.testing import JobBackendContract, make_context

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
MARKER = "<!-- complete-backend -->"


def doc_code() -> str:
    text = DOC.read_text()
    assert text.count(MARKER) == 1, f"{DOC} must mark the complete backend once with {MARKER}"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert match, f"the block after {MARKER} in {DOC} is not a ```python block"
    return match.group(1) + "\n"


def load_doc_module() -> ModuleType:
    """The documented code as an importable module (its file is gone once it is loaded)."""
    with tempfile.TemporaryDirectory(prefix="doc-backend-") as tmp:
        path = Path(tmp) / "doc_tiny_backend.py"
        path.write_text(doc_code())
        spec = importlib.util.spec_from_file_location("doc_tiny_backend", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


_MODULE = load_doc_module()


def test_the_documented_backend_fits_in_50_lines() -> None:
    lines = doc_code().splitlines()
    assert len(lines) <= 50, f"the documented backend has {len(lines)} lines"


def test_it_registers_through_its_hook_and_validates_options(tmp_path: Path) -> None:
    pm = PluginManager(load_entrypoints=False)
    pm.register(_MODULE, name="doc-tiny")
    cls = pm.get("backend", "tiny-subprocess")
    assert cls is _MODULE.TinyBackend and not pm.failures
    backend: Any = cls({"kill-grace": "2s"}, make_context(tmp_path))
    assert backend.opts.kill_grace == 2.0
    with pytest.raises(ConfigError, match=r"\[backend.tiny-subprocess\] unknown key 'grace'.*"
                                          r"valid keys: kill_grace"):
        cls({"grace": 1}, make_context(tmp_path))


class TestDocumentedBackend(JobBackendContract):
    timeout = 60.0

    def make_backend(self, tmp_path: Path) -> Any:
        return _MODULE.TinyBackend({"kill-grace": "1s"}, make_context(tmp_path))

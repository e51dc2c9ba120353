"""The import contract: layering (import-linter) and no heavy library at import time.

Heavy libraries must be imported inside the functions that use them, so that ``autolab
--help`` and ``autolab plugins`` stay fast and work without the optional extras. Each check
runs in a fresh interpreter and inspects its ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import autolab_core

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "submitit", "huggingface_hub", "trackio", "matplotlib")
ENTRY_POINTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
    "entry-points"]["autolab"]
EXAMPLE_SRC = REPO / "contrib" / "autolab-example-plugin" / "src"


def heavy_modules_after(code: str, pythonpath: Path | None = None) -> list[str]:
    """Run ``code`` in a fresh interpreter; the heavy top-level modules it left imported."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print('HEAVY=' + json.dumps(sorted({{m.split('.')[0] for m in sys.modules}}"
        f" & set({list(HEAVY)!r}))))"
    )
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                          env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert proc.returncode == 0 and lines, f"probe failed:\n{proc.stdout}\n{proc.stderr}"
    found: list[str] = json.loads(lines[-1][len("HEAVY="):])
    return found


def test_layering_contracts_hold() -> None:
    """``[tool.importlinter]`` in pyproject.toml: core never imports the app, agents never
    import backends."""
    proc = subprocess.run(["lint-imports", "--no-cache"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_autolab_core_imports_nothing_heavy() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(autolab_core.__path__, "autolab_core."))
    assert {"autolab_core.plugins", "autolab_core.config", "autolab_core.testing"} <= set(modules)
    code = "\n".join(f"import {m}" for m in modules)
    assert heavy_modules_after(code) == [], f"importing {modules} pulled in heavy libraries"


@pytest.mark.parametrize(("name", "module"), sorted(ENTRY_POINTS.items()))
def test_builtin_plugin_module_imports_nothing_heavy(name: str, module: str) -> None:
    """Each module named by an ``autolab`` entry point, imported and registered, alone."""
    code = (
        "import importlib.util, sys\n"
        f"if importlib.util.find_spec({module!r}) is None:\n"
        f"    sys.exit('entry point {name} names {module}, which does not exist')\n"
        "from autolab_core.plugins import PluginManager\n"
        "pm = PluginManager(load_entrypoints=False)\n"
        f"pm.register(importlib.import_module({module!r}), name={name!r})\n"
        "pm.all()  # runs the register hooks\n"
        "assert not pm.failures, pm.failures"
    )
    assert heavy_modules_after(code) == []


def test_example_plugin_imports_nothing_heavy() -> None:
    code = "import autolab_example_plugin.plugin"
    assert heavy_modules_after(code, pythonpath=EXAMPLE_SRC) == []


@pytest.mark.parametrize("argv", [["--help"], ["plugins"]])
def test_cli_help_and_plugins_import_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        f"sys.argv = ['autolab', *{argv!r}]\n"
        "from autolab.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )
    assert heavy_modules_after(code) == []

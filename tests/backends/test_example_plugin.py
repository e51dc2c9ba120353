"""The example third-party plugin (contrib/autolab-example-plugin), installed for real.

The distribution is built and installed with pip (``--target``, no network, no build
isolation) into a temporary directory, exactly as a user's ``pip install`` would lay it out:
package plus ``.dist-info`` with its ``entry_points.txt``. autolab then finds it through
``importlib.metadata`` alone; the plugin's own test suite (the JobBackend contract) and the
``autolab plugins`` command run against that installed copy in fresh interpreters.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from autolab_core.plugins import PluginManager, PluginWarning

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "contrib" / "autolab-example-plugin"
DIST = "autolab-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the plugin's source tree, and pip's ``--target`` install of it (``site``)."""
    base = tmp_path_factory.mktemp("example-plugin")
    copy = base / "src-copy"  # build from a copy: no build/ or egg-info in the repo
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(site),
         str(copy)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "autolab_example_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    return base


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTOLAB_STRICT_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return {**env, **extra}


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = installed / "site"
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("AUTOLAB_STRICT_PLUGINS", raising=False)
    importlib.invalidate_caches()
    yield site
    for name in [m for m in sys.modules if m.split(".")[0] == "autolab_example_plugin"]:
        del sys.modules[name]


def test_discovered_through_its_entry_point(on_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # built-ins still being written
        pm = PluginManager()
    backend = pm.registry["backend"]["example-subprocess"]
    papers = pm.registry["paper_source"]["example-notes"]
    for info in (backend, papers):
        assert (info.distribution, info.version) == (DIST, "0.1.0")
        assert info.available() is None
        assert Path(sys.modules[info.cls.__module__].__file__ or "").is_relative_to(on_path)
    assert not [f for f in pm.failures if DIST in f]


def test_strict_discovery_of_just_this_distribution(on_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOLAB_STRICT_PLUGINS", "1")
    eps = [ep for ep in importlib.metadata.entry_points(group="autolab")
           if ep.dist is not None and ep.dist.name == DIST]
    assert [ep.value for ep in eps] == ["autolab_example_plugin.plugin"]
    pm = PluginManager(load_entrypoints=False)
    pm.load_entrypoints(eps)
    assert [(i.name, i.kind) for i in pm.all()] == [
        ("example-subprocess", "backend"), ("example-notes", "paper_source")]


def test_its_own_test_suite_passes_against_the_installed_copy(installed: Path) -> None:
    """The plugin's tests/ (the JobBackendContract suite and extras), in a fresh pytest."""
    copy = installed / "src-copy"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
         "ignore::autolab_core.plugins.PluginWarning", "tests"],
        cwd=copy, env=_env(installed / "site"), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


def test_autolab_plugins_lists_it(installed: Path) -> None:
    """``autolab plugins``: a table with name, kind, distribution, version, available."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from autolab.cli import main; sys.exit(main())",
         "plugins"],
        env=_env(installed / "site", COLUMNS="200", NO_COLOR="1"), capture_output=True,
        text=True, timeout=120, cwd=installed,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name, kind in (("example-subprocess", "backend"), ("example-notes", "paper source")):
        rows = [ln for ln in lines if f" {name} " in ln]
        assert len(rows) == 1, proc.stdout
        assert kind in rows[0] and DIST in rows[0] and "0.1.0" in rows[0], rows[0]
        assert "yes" in rows[0], rows[0]  # available

"""Which distribution provides ``autolab`` here, and the unrelated one that breaks it.

autolab is published as ``autolab-ml``. ``pip install autolab`` gets an unrelated project (a
lab-instrument control library) that installs its own top-level ``autolab`` package into the
same folder, so both cannot live in one environment. :func:`unrelated_autolab` finds it through
``importlib.metadata``; :func:`ensure_no_unrelated_autolab` turns that into a clear error.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from autolab_core.errors import ConfigError

#: The name autolab is published under on PyPI.
DISTRIBUTION = "autolab-ml"
#: Names on PyPI that are NOT this project.
UNRELATED_NAMES = ("autolab",)


def _is_ours(dist: importlib.metadata.Distribution) -> bool:
    """An install of this project under an old name declares the ``autolab`` plugin group
    (backends, LLMs, ...) and the ``autolab = autolab.cli:main`` console script."""
    eps = dist.entry_points
    return any(ep.group == "autolab" for ep in eps) or any(
        ep.group == "console_scripts" and ep.value.startswith("autolab.cli") for ep in eps)


def unrelated_autolab(
    distributions: Iterable[importlib.metadata.Distribution] | None = None,
) -> str | None:
    """``"autolab 2.0.3"`` when an unrelated distribution named ``autolab`` is installed."""
    dists = importlib.metadata.distributions() if distributions is None else distributions
    for dist in dists:
        name = (dist.metadata["Name"] or "").strip().lower().replace("_", "-")
        if name in UNRELATED_NAMES and not _is_ours(dist):
            return f"{dist.metadata['Name']} {dist.version}"
    return None


def ensure_no_unrelated_autolab() -> None:
    """Raise :class:`ConfigError` naming the fix when the unrelated ``autolab`` is installed."""
    found = unrelated_autolab()
    if found is not None:
        raise ConfigError(
            f"the unrelated PyPI package {found!r} is installed in this environment and "
            f"overwrites autolab's `autolab` package. Fix: `pip uninstall autolab`, then "
            f"`pip install --force-reinstall '{DISTRIBUTION}'` (this project is published as "
            f"{DISTRIBUTION}; `autolab` and `autolab-ai` on PyPI are other projects)"
        )

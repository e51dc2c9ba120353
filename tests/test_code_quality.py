"""Static checks as tests: ``mypy --strict`` on autolab_core and ``ruff check`` on the repo.

Both read their settings from pyproject.toml (``[tool.mypy]`` makes autolab_core strict;
``[tool.ruff]`` selects the rules), so these tests fail exactly when the CI commands would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_mypy_strict_on_autolab_core() -> None:
    proc = run("mypy", "--strict", "autolab_core")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found")


def test_ruff_is_clean() -> None:
    proc = run("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr

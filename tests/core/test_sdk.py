"""The plugin SDK basics: options_class validation, shared validators, atomic writes, exports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

import autolab_core
from autolab_core.atomic import open_atomic, read_json, write_atomic, write_json_once
from autolab_core.config import parse_options
from autolab_core.errors import ConfigError
from autolab_core.interfaces import PaperSource, PluginContext
from autolab_core.models import Paper
from autolab_core.testing import make_context
from autolab_core.validators import between, duration, non_negative, positive

REPO = Path(__file__).resolve().parents[2]


@attrs.frozen
class NewOptions:
    folder: str = "notes"
    limit: int = attrs.field(default=5, validator=positive)
    offset: float = attrs.field(default=0.0, validator=non_negative)
    share: float = attrs.field(default=0.5, validator=between(0, 1))
    wait: float = duration(60.0)


class _Source(PaperSource):
    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        return []

    def get(self, paper_id: str) -> Paper | None:
        return None


class NewStyle(_Source):
    name = "new-style"
    options_class = NewOptions
    opts: NewOptions


class OldStyle(_Source):
    """A third-party plugin written before options_class: it validates by itself."""

    name = "old-style"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.parsed = parse_options(NewOptions, options, f"papers.{self.name}")


def test_options_class_is_validated_once_into_opts(tmp_path: Path) -> None:
    src = NewStyle({"folder": "x", "wait": "2m", "share": 1}, make_context(tmp_path))
    assert src.opts == NewOptions(folder="x", wait=120.0, share=1)
    assert src.options == {"folder": "x", "wait": "2m", "share": 1}  # the raw table is kept


@pytest.mark.parametrize(("table", "message"), [
    ({"folders": "x"}, r"\[papers.new-style\] unknown key 'folders'; valid keys: folder, limit, "
                       r"offset, share, wait"),
    ({"limit": "3"}, r"\[papers.new-style\] limit = '3' has the wrong type; expected int"),
    ({"limit": 0}, r"\[papers.new-style\] limit must be positive, got 0"),
    ({"offset": -1.5}, r"offset must be >= 0, got -1.5"),
    ({"share": 2}, r"share must be between 0 and 1, got 2"),
    ({"wait": "soon"}, r"\[papers.new-style\] wait: expected a duration such as 600"),
])
def test_bad_options_name_the_table_and_the_fix(tmp_path: Path, table: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NewStyle(table, make_context(tmp_path))


def test_old_style_plugins_keep_working(tmp_path: Path) -> None:
    src = OldStyle({"limit": 7}, make_context(tmp_path))
    assert src.opts is None and src.parsed.limit == 7 and src.options == {"limit": 7}
    with pytest.raises(ConfigError, match=r"\[papers.old-style\] unknown key 'nope'"):
        OldStyle({"nope": 1}, make_context(tmp_path))


def test_write_atomic_replaces_whole_files_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, '{"a": 1}')
    write_atomic(target, b'{"a": 2}', durable_dir=True)
    assert read_json(target) == {"a": 2}

    class Boom(Exception):
        pass

    with pytest.raises(Boom), open_atomic(target) as fh:
        fh.write(b"half a fi")
        raise Boom
    assert read_json(target) == {"a": 2}  # the failed write left the old file alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_json_once_has_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "exit.json"
    assert write_json_once(path, {"status": "succeeded"}) is True
    assert write_json_once(path, {"status": "failed"}) is False
    assert read_json(path) == {"status": "succeeded"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exit.json"]


def test_every_exported_name_resolves_and_core_stays_light() -> None:
    assert set(autolab_core.__all__) >= {"JobDirectory", "ChatLLM", "HTTPChatLLM", "write_atomic",
                                         "positive", "duration", "parse_options"}
    for name in autolab_core.__all__:
        assert getattr(autolab_core, name) is not None
    code = ("import sys, autolab_core as a\n[getattr(a, n) for n in a.__all__]\n"
            "print(sorted({'httpx', 'torch', 'huggingface_hub'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_the_supervisor_and_its_helpers_need_only_the_standard_library(tmp_path: Path) -> None:
    """``python -S`` with only the autolab_core folder: no attrs, no pluggy, no site-packages."""
    only_core = tmp_path / "path"
    only_core.mkdir()
    (only_core / "autolab_core").symlink_to(REPO / "autolab_core")
    code = ("import sys; import autolab_core.supervisor, autolab_core.atomic\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('attrs', 'pluggy')))")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(only_core)}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_plugin_kinds_name_their_tables() -> None:
    from autolab.backends.local import LocalBackend
    from autolab.llms.anthropic import AnthropicLLM
    from autolab.metrics.parquet_store import ParquetMetricStore
    assert LocalBackend.options_table() == "backend.local"
    assert AnthropicLLM.options_table() == "llm.anthropic"
    assert NewStyle.options_table() == "papers.new-style"
    assert ParquetMetricStore.options_table() == "metrics.parquet"



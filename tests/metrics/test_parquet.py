"""The ``parquet`` metric store: real files, real crashes (a child process that dies with
``os._exit`` at a chosen system call), read back by this store and by plain pyarrow."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from autolab.metrics.parquet_store import ParquetMetricStore
from autolab.metrics.schema import SCHEMA
from autolab_core.errors import ConfigError, PluginError
from autolab_core.models import MetricPoint
from autolab_core.plugins import PluginManager
from autolab_core.testing import make_context


def points(exp: str, steps: range, names: tuple[str, ...] = ("loss", "tok_per_s"),
           offset: float = 0.0) -> list[MetricPoint]:
    return [MetricPoint(exp, s, n, offset + s + i / 10, 1000.0 + s)
            for s in steps for i, n in enumerate(names)]


def keys(table) -> list[tuple[str, int, str]]:
    return list(zip(table.column("experiment_id").to_pylist(), table.column("step").to_pylist(),
                    table.column("name").to_pylist(), strict=True))


def store(tmp_path: Path, **options) -> ParquetMetricStore:
    return ParquetMetricStore(options, make_context(tmp_path))


def test_roundtrip_filters_and_nonfinite_values(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.append(points("a", range(5)) + points("b", range(3)))
    s.append([MetricPoint("a", 5, "loss", math.nan, 1.0), MetricPoint("a", 6, "loss", math.inf, 2.0)])
    assert s.query().num_rows == 18  # buffered points are visible before any flush
    s.flush()
    everything = s.query()
    assert everything.schema.equals(SCHEMA)
    assert everything.num_rows == 18
    only_b = s.query(experiment_ids=["b"])
    assert set(only_b.column("experiment_id").to_pylist()) == {"b"} and only_b.num_rows == 6
    loss_a = s.query(["a"], ["loss"])
    values = loss_a.column("value").to_pylist()
    assert loss_a.column("step").to_pylist() == list(range(7))
    assert math.isnan(values[5]) and values[6] == math.inf
    assert s.query(["nobody"]).num_rows == 0
    # a new store on the same directory sees the same points
    assert store(tmp_path).query().num_rows == 18


def test_files_are_never_rewritten_and_compaction_merges_by_level(tmp_path: Path) -> None:
    s = store(tmp_path, flush_points=10, compact_fanout=3)
    seen: dict[str, tuple[int, int, int]] = {}
    for i in range(10):
        s.append(points(f"e{i}", range(5)))  # 10 points: one L0 file per append
        for f in s.files():
            st = f.stat()
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            assert seen.setdefault(f.name, sig) == sig, f"{f.name} was rewritten"
    names = [f.name for f in s.files()]
    # 10 flushes with fanout 3: three L1 files merged into one L2 file, one L0 left
    assert sorted(n.split("-")[0] for n in names) == ["L0", "L2"], names
    assert s.query().num_rows == 100
    assert len(set(keys(s.query()))) == 100
    assert [f.name for f in s.compact(full=True)] and len(s.files()) == 1
    assert s.query().num_rows == 100


def test_flush_interval_and_finish_make_points_durable(tmp_path: Path) -> None:
    s = store(tmp_path, flush_interval="0.01s")
    s.append(points("a", range(2)))
    import time

    time.sleep(0.02)
    s.append(points("a", range(2, 3)))  # the buffer is old: this append writes a file
    assert len(s.files()) == 1 and store(tmp_path).query().num_rows == 6
    s2 = store(tmp_path / "other")
    s2.append(points("x", range(3)))
    assert store(tmp_path / "other").query().num_rows == 0  # still buffered
    s2.finish("x")
    assert store(tmp_path / "other").query().num_rows == 6


def test_directory_reads_with_plain_pyarrow_and_exports(tmp_path: Path) -> None:
    s = store(tmp_path, flush_points=7)
    s.append(points("a", range(20)) + points("b", range(20)))
    s.close()
    root = tmp_path / ".autolab" / "metrics"
    assert pq.read_table(root).num_rows == 80
    assert ds.dataset(root, format="parquet").count_rows() == 80
    out = s.export_parquet(tmp_path / "export.parquet")
    exported = pq.read_table(out)
    assert exported.num_rows == 80 and exported.schema.equals(SCHEMA, check_metadata=False)
    assert s.export_parquet(tmp_path).name == "metrics.parquet"  # a directory gets a file


_CRASH_CHILD = textwrap.dedent("""
    import os, sys
    from autolab.metrics.parquet_store import ParquetMetricStore
    from autolab_core.models import MetricPoint
    from autolab_core.testing import make_context
    from pathlib import Path
    call, nth = sys.argv[2], int(sys.argv[3])
    s = ParquetMetricStore({"flush_points": 1000, "compact_fanout": 4},
                           make_context(Path(sys.argv[1])))
    real = getattr(os, call)
    count = [0]
    def dying(*a, **k):
        count[0] += 1
        if count[0] == nth:
            os._exit(17)  # the process dies here: no cleanup, no finally
        return real(*a, **k)
    setattr(os, call, dying)
    s.append([MetricPoint("last", i, "loss", float(i), 1.0) for i in range(50)])
    s.flush()  # 4th L0 file, which triggers a compaction
    print("NO CRASH")
""")


CRASH_POINTS = [
    ("replace", 1, False),  # dies before its own part file lands: those points never acked
    ("replace", 2, True),  # merged file written to .tmp, dies before the rename
    ("unlink", 1, True),  # merged file in place, no input deleted yet
    ("unlink", 3, True),  # merged file in place, two of four inputs deleted
]


def test_crash_mid_compaction_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Four crash points, each in its own lab and its own child process (run concurrently)."""
    children = []
    for call, nth, _ in CRASH_POINTS:
        lab = tmp_path / f"{call}{nth}"
        s = store(lab, flush_points=1000, compact_fanout=4)
        for i in range(3):
            s.append(points(f"e{i}", range(50)))
            s.flush()
        s.close()
        children.append(subprocess.Popen(
            [sys.executable, "-c", _CRASH_CHILD, str(lab), call, str(nth)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for (call, nth, flushed), child in zip(CRASH_POINTS, children, strict=True):
        out, _ = child.communicate(timeout=60)
        where = f"crash at {call} #{nth}"
        assert child.returncode == 17, f"{where}: {out}"
        lab = tmp_path / f"{call}{nth}"
        root = lab / ".autolab" / "metrics"
        expected = 300 + (50 if flushed else 0)
        after = store(lab, flush_points=1000, compact_fanout=4)  # recovery happens on open
        table = after.query()
        assert table.num_rows == expected, where
        assert len(set(keys(table))) == expected, f"{where}: duplicates"
        assert not [n for n in os.listdir(root) if n.endswith(".tmp")], where
        assert pq.read_table(root).num_rows == expected, f"{where}: outside readers disagree"
        # and the store keeps working: the next compaction is clean
        after.append(points("more", range(10)))
        assert after.compact(full=True) and after.query().num_rows == expected + 20, where


def test_one_writer_at_a_time_readers_never_disturb_it(tmp_path: Path) -> None:
    writer = store(tmp_path)
    writer.append(points("a", range(10)))
    writer.flush()
    in_progress = tmp_path / ".autolab" / "metrics" / ".L0-in-progress.parquet.tmp"
    in_progress.write_bytes(b"half a file")
    reader = store(tmp_path)  # e.g. `autolab status` in another shell
    assert not reader.writable and writer.writable
    assert in_progress.exists()  # a reader runs no recovery
    assert reader.query().num_rows == 20
    with pytest.raises(PluginError, match=r"another process is writing.*only to query"):
        reader.append(points("b", range(1)))
    with pytest.raises(PluginError):
        reader.compact(full=True)
    writer.close()
    in_progress.unlink()
    successor = store(tmp_path)
    assert successor.writable
    successor.append(points("b", range(1)))
    successor.close()
    assert store(tmp_path).query().num_rows == 22


def test_options_are_validated_with_the_fix_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'flush_every'.*flush_points"):
        store(tmp_path, flush_every=3)
    with pytest.raises(ConfigError, match="choose one of"):
        store(tmp_path, compression="brotli9")
    with pytest.raises(ConfigError, match="must be positive"):
        store(tmp_path, flush_points=0)
    custom = store(tmp_path, dir="metrics-here")
    custom.append(points("a", range(1)))
    custom.flush()
    assert list((tmp_path / "metrics-here").glob("L0-*.parquet"))


def test_registered_and_imports_stay_light() -> None:
    pm = PluginManager(load_entrypoints=False)
    import autolab.metrics.plugin as plugin

    pm.register(plugin, name="metric-stores")
    assert set(pm.names("metric_store")) == {"parquet", "trackio"}
    assert pm.get("metric_store", "parquet") is ParquetMetricStore
    code = ("import sys, json, autolab.metrics.plugin\n"
            "print(json.dumps(sorted(m for m in ('pyarrow', 'trackio') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == [], out.stderr

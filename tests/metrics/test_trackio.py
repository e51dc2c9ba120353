"""The ``trackio`` metric store against the real Trackio (no mocks, no network).

Trackio reads ``TRACKIO_DIR`` once, at import, so each scenario runs in a fresh interpreter
(one child process per test) and reports what it saw as JSON; the counts are also checked
here, independently, by opening Trackio's SQLite file read-only.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

N_STEPS = 10_000  # x 2 metrics = 20,000 points from one writer

_MAIN = textwrap.dedent("""
    import json, math, os, sys
    from pathlib import Path
    from autolab_core.models import MetricPoint
    from autolab_core.testing import make_context
    from autolab.metrics.trackio_store import TrackioMetricStore, MetricsLostError
    from autolab_core.errors import PluginError
    lab, n = Path(sys.argv[1]), int(sys.argv[2])
    out = {}
    s = TrackioMetricStore({}, make_context(lab, "toy-lab"))
    out["env_restored"] = "TRACKIO_DIR" not in os.environ
    s.start("exp-1", {"hypothesis": "double the lr", "changes": {"lr": 0.02}, "_private": 1},
            group="campaign-a")
    pts = []
    for step in range(n):
        pts.append(MetricPoint("exp-1", step, "train_loss", 3.0 / (step + 1), 1.7e9 + step))
        pts.append(MetricPoint("exp-1", step, "tok_per_s", 1000.0 + step, 1.7e9 + step))
    pts[11] = MetricPoint("exp-1", 5, "tok_per_s", math.nan, 1.7e9 + 5)
    for i in range(0, len(pts), 250):  # as the orchestrator does, line by line in batches
        s.append(pts[i:i + 250])
    s.finish("exp-1")
    table = s.query()
    out["rows"] = table.num_rows
    out["one"] = s.query(["exp-1"], ["train_loss"]).num_rows
    out["nan"] = sum(1 for v in table.column("value").to_pylist() if v != v)
    out["first"] = s.query(["exp-1"], ["train_loss"]).slice(0, 1).to_pylist()[0]
    out["db"] = str(s.db_path)
    # Trackio's own reader sees the run, under the experiment id
    from trackio.sqlite_storage import SQLiteStorage
    out["runs"] = SQLiteStorage.get_runs("toy-lab")
    import pyarrow.parquet as pq
    exported = s.export_parquet(lab / "export")
    out["export_rows"] = pq.read_table(exported).num_rows
    # a second lab in the same process cannot silently share the first one's TRACKIO_DIR
    try:
        TrackioMetricStore({}, make_context(lab / "other", "toy-lab"))
        out["conflict"] = None
    except PluginError as exc:
        out["conflict"] = str(exc)
    print("RESULT " + json.dumps(out))
""")

_LOSS = textwrap.dedent("""
    import json, sqlite3, sys
    from pathlib import Path
    from autolab_core.models import MetricPoint
    from autolab_core.testing import make_context
    from autolab.metrics.trackio_store import TrackioMetricStore, MetricsLostError
    lab = Path(sys.argv[1])
    out = {}
    s = TrackioMetricStore({"flush_points": 100000}, make_context(lab, "toy-lab"))
    from trackio.sqlite_storage import SQLiteStorage  # after the store set TRACKIO_DIR
    # 1. a write that fails keeps its points buffered; the retry writes each exactly once
    real, calls = SQLiteStorage.bulk_log, [0]
    def failing_once(*a, **k):
        calls[0] += 1
        if calls[0] == 1:
            real(*a, **k)  # the rows land, then the call fails: the worst case for a retry
            raise OSError("database is locked")
        return real(*a, **k)
    SQLiteStorage.bulk_log = staticmethod(failing_once)
    s.append([MetricPoint("retry", i, "loss", float(i), 1.0 + i) for i in range(100)])
    try:
        s.flush()
        out["first_flush"] = "ok"
    except OSError as exc:
        out["first_flush"] = str(exc)
    s.finish("retry")
    out["retry_rows"] = s.query(["retry"]).num_rows
    # 2. rows that vanish (another writer, a lost batch) are detected on finish
    s.append([MetricPoint("victim", i, "loss", float(i), 1.0 + i) for i in range(50)])
    s.flush()
    con = sqlite3.connect(s.db_path)
    con.execute("DELETE FROM metrics WHERE run_id = 'victim' AND step < 7")
    con.commit(); con.close()
    try:
        s.finish("victim")
        out["lost_error"] = None
    except MetricsLostError as exc:
        out["lost_error"] = str(exc)
    out["lost"] = s.lost
    print("RESULT " + json.dumps(out))
""")


def run_child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_every_point_of_one_writer_arrives_with_run_config_and_group(tmp_path: Path) -> None:
    out = run_child(_MAIN, str(tmp_path), str(N_STEPS))
    total = 2 * N_STEPS
    assert out["rows"] == total, "points were lost or duplicated"
    assert out["one"] == N_STEPS
    assert out["nan"] == 1  # a NaN is kept, not dropped
    assert out["first"] == {"experiment_id": "exp-1", "step": 0, "name": "train_loss",
                            "value": 3.0, "wall_time": 1.7e9}
    assert out["runs"] == ["exp-1"]
    assert out["export_rows"] == total
    assert out["env_restored"]
    assert "TRACKIO_DIR" in out["conflict"] and "[metrics.trackio] dir" in out["conflict"]

    db = Path(out["db"])
    assert db == tmp_path / ".autolab" / "metrics" / "trackio" / "toy-lab.db"
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        blobs = [json.loads(b) for (b,) in con.execute(
            "SELECT metrics FROM metrics WHERE run_id = 'exp-1'")]
        (config_blob,) = con.execute(
            "SELECT config FROM configs WHERE run_id = 'exp-1'").fetchone()
    finally:
        con.close()
    assert sum(len(b) for b in blobs) == total  # counted independently of the store
    config = json.loads(config_blob)
    assert config["_Group"] == "campaign-a"
    assert config["hypothesis"] == "double the lr" and config["changes"] == {"lr": 0.02}
    assert config["cfg_private"] == 1  # Trackio reserves "_" keys; ours are renamed
    exported = pq.read_table(tmp_path / "export" / "metrics.parquet")
    assert exported.column_names == ["experiment_id", "step", "name", "value", "wall_time"]


def test_failed_writes_retry_exactly_once_and_losses_are_detected(tmp_path: Path) -> None:
    out = run_child(_LOSS, str(tmp_path))
    assert out["first_flush"] == "database is locked"  # the failure reached the caller
    assert out["retry_rows"] == 100  # the retried batch was not duplicated
    assert out["lost_error"] is not None
    assert "wrote 50 points but read back 43" in out["lost_error"]
    assert "only writer" in out["lost_error"]
    assert out["lost"] == {"victim": 7}

"""Benchmark of the metric stores and the report.

    python benchmarks/bench_metrics.py                 # 10M points, 10,000 experiments
    python benchmarks/bench_metrics.py --quick         # 1M points, 1,000 experiments
    python benchmarks/bench_metrics.py --json out.json # also write the numbers as JSON

What it measures (goals from issue 7):

1. Ingestion: 8 producer processes print ``AUTOLAB_METRIC`` lines (each one a worker slot
   running its experiments one after another, like the jobs' logs); one writer (this process)
   reads the pipes, parses the lines, appends to the ``parquet`` store and calls
   ``finish(experiment)`` at the end of each experiment. Points per second, and the row count
   verified twice: through ``query`` and by plain ``pyarrow.parquet.read_table`` of the dir.
2. Query: one metric across all experiments, from a fresh store (goal < 1 s), before and
   after a full compaction.
3. Report: ``build_report`` for all experiments with the store as the curve source (goal
   < 5 s for HTML + Markdown; PNGs timed separately); the page is opened in headless
   Chromium when installed and the time to a loaded DOM reported.
4. Trackio: the same ingestion into the ``trackio`` store (fewer points; it is slower), in a
   child process, with ``finish`` verifying every point and an independent SQLite count.
5. With ``/work/shared/data/autoresearch-hub-history.json`` present: a report over its
   14,732 real experiments (never copied into the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

NAMES = ("train_loss", "val_loss", "tok_per_s", "lr")
HUB_HISTORY = Path("/work/shared/data/autoresearch-hub-history.json")


# -- producers -------------------------------------------------------------------------------
def produce(index: int, producers: int, experiments: int, steps: int) -> None:
    """Print the metric lines of experiments index, index + producers, ... (one worker slot)."""
    from autolab.reporting.synthetic import synthetic_curve, synthetic_lab
    from autolab_core.metriclines import format_metric_line

    lab = synthetic_lab(experiments, slots=producers, seed=0)
    out = sys.stdout
    for e in lab[index::producers]:
        out.write(f"BEGIN {e.id}\n")
        row: dict[str, float] = {}
        step = None
        for p in synthetic_curve(e, steps, NAMES):
            if p.step != step and row:
                out.write(format_metric_line(step, row) + "\n")
                row = {}
            step = p.step
            row[p.name] = p.value
        out.write(format_metric_line(step, row) + "\n")
        out.write(f"END {e.id}\n")
    out.flush()


def ingest(store, producers: int, experiments: int, steps: int) -> dict:
    """Run the producers and be their single writer; returns counts and timings."""
    from autolab_core.metriclines import parse_metric_line
    from autolab_core.models import MetricPoint

    cmd = [sys.executable, __file__, "--produce"]
    procs = [subprocess.Popen([*cmd, str(i), str(producers), str(experiments), str(steps)],
                              stdout=subprocess.PIPE) for i in range(producers)]
    sel = selectors.DefaultSelector()
    state = {}
    for p in procs:
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout, selectors.EVENT_READ, p)
        state[p.pid] = {"buf": b"", "exp": None}
    t0 = time.perf_counter()
    points = finished = 0
    spent = {"parse_s": 0.0, "append_s": 0.0, "finish_s": 0.0}
    open_pipes = len(procs)
    wall = time.time()
    while open_pipes:
        batch: list[MetricPoint] = []
        ended: list[str] = []
        for key, _ in sel.select(timeout=1.0):
            proc = key.data
            st = state[proc.pid]
            chunk = key.fileobj.read(1 << 20)
            if not chunk:
                sel.unregister(key.fileobj)
                open_pipes -= 1
                continue
            t = time.perf_counter()
            lines = (st["buf"] + chunk).split(b"\n")
            st["buf"] = lines.pop()
            for raw in lines:
                line = raw.decode()
                if line.startswith("BEGIN "):
                    st["exp"] = line[6:]
                elif line.startswith("END "):
                    ended.append(line[4:])
                else:
                    parsed = parse_metric_line(line)
                    if parsed:
                        step, values = parsed
                        batch.extend(MetricPoint(st["exp"], step, n, v, wall)
                                     for n, v in values.items())
            spent["parse_s"] += time.perf_counter() - t
        t = time.perf_counter()
        if batch:
            store.append(batch)
            points += len(batch)
        spent["append_s"] += time.perf_counter() - t
        t = time.perf_counter()
        for exp in ended:  # one poll tick: the first finish flushes, the rest find it done
            store.finish(exp)
            finished += 1
        spent["finish_s"] += time.perf_counter() - t
    store.flush()
    elapsed = time.perf_counter() - t0
    for p in procs:
        assert p.wait() == 0, f"producer {p.pid} failed"
    busy = sum(spent.values())
    return {"points": points, "experiments_finished": finished, "seconds": elapsed,
            "points_per_s": points / elapsed, **spent, "writer_busy_s": busy,
            "writer_points_per_busy_s": points / busy}


# -- parquet ---------------------------------------------------------------------------------
def bench_parquet(root: Path, experiments: int, steps: int, producers: int) -> dict:
    import pyarrow.parquet as pq

    from autolab.metrics.parquet_store import ParquetMetricStore
    from autolab_core.testing import make_context

    ctx = make_context(root)
    store = ParquetMetricStore({}, ctx)
    res = {"ingest": ingest(store, producers, experiments, steps)}
    expected = experiments * steps * len(NAMES)
    res["expected_points"] = expected
    res["rows_via_query"] = store.query().num_rows
    res["rows_via_pyarrow"] = pq.read_table(ctx.state_dir / "metrics").num_rows
    res["files"] = len(store.files())
    assert res["rows_via_query"] == expected == res["rows_via_pyarrow"], res
    res["disk_mb"] = sum(f.stat().st_size for f in store.files()) / 1e6
    store.close()  # let the next instance be the writer that compacts

    def time_query(label: str) -> None:
        runs = []
        for _ in range(3):
            fresh = ParquetMetricStore({}, ctx)
            t = time.perf_counter()
            table = fresh.query(names=["val_loss"])
            runs.append(time.perf_counter() - t)
        assert table.num_rows == experiments * steps
        res[label] = {"rows": table.num_rows, "best_s": min(runs),
                      "median_s": statistics.median(runs), "files": len(fresh.files())}

    time_query("query_one_metric")
    t = time.perf_counter()
    compactor = ParquetMetricStore({}, ctx)
    compactor.compact(full=True)
    compactor.close()
    res["full_compaction_s"] = time.perf_counter() - t
    time_query("query_one_metric_compacted")
    t = time.perf_counter()
    one = ParquetMetricStore({}, ctx).query(["e00042"])
    res["query_one_experiment_s"] = time.perf_counter() - t
    assert one.num_rows == steps * len(NAMES)
    return res


# -- report ----------------------------------------------------------------------------------
def bench_report(root: Path, experiments: int, out: Path) -> dict:
    from autolab.metrics.parquet_store import ParquetMetricStore
    from autolab.reporting.report import build_report
    from autolab.reporting.synthetic import synthetic_lab
    from autolab_core.testing import make_context

    lab = synthetic_lab(experiments, slots=8, seed=0)
    store = ParquetMetricStore({}, make_context(root))
    res = {}
    t = time.perf_counter()
    files = build_report(out / "html", lab, store, png=False, curve_metric="train_loss")
    res["html_and_markdown_s"] = time.perf_counter() - t
    res["html_bytes"] = files.html.stat().st_size
    t = time.perf_counter()
    files = build_report(out / "png", lab, store, png=True, curve_metric="train_loss")
    res["with_pngs_s"] = time.perf_counter() - t
    res["pngs"] = [p.name for p in files.pngs]
    res["chromium_dom_s"] = chromium_load(files.html)
    return res


def chromium_load(html: Path) -> float | None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        t = time.perf_counter()
        proc = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", f"--user-data-dir={profile}", "--dump-dom",
             html.as_uri()], capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - t
    assert 'data-ready="1"' in proc.stdout, "the report's script did not run in chromium"
    return elapsed


# -- trackio ---------------------------------------------------------------------------------
_TRACKIO_CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
from pathlib import Path
import bench_metrics
from autolab.metrics.trackio_store import TrackioMetricStore
from autolab_core.testing import make_context
store = TrackioMetricStore({{}}, make_context(Path({root!r}), "bench"))
res = bench_metrics.ingest(store, {producers}, {experiments}, {steps})
res["rows_via_query"] = store.query().num_rows
res["db"] = str(store.db_path)
res["lost"] = store.lost
print("RESULT " + json.dumps(res))
"""


def bench_trackio(root: Path, experiments: int, steps: int, producers: int) -> dict:
    code = _TRACKIO_CHILD.format(bench=str(Path(__file__).parent), root=str(root),
                                 producers=producers, experiments=experiments, steps=steps)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1][7:])
    con = sqlite3.connect(f"{Path(res['db']).as_uri()}?mode=ro", uri=True)
    try:
        res["rows_via_sqlite"] = sum(len(json.loads(b)) for (b,) in
                                     con.execute("SELECT metrics FROM metrics"))
    finally:
        con.close()
    res["expected_points"] = experiments * steps * len(NAMES)
    assert res["rows_via_query"] == res["expected_points"] == res["rows_via_sqlite"], res
    return res


# -- real history ----------------------------------------------------------------------------
def hub_experiments() -> list:
    from autolab_core.models import (
        Experiment,
        ExperimentStatus,
        Hypothesis,
        Result,
        StatusEvent,
    )

    records = json.loads(HUB_HISTORY.read_text())
    by_hash = {r["hash"]: r for r in records}
    parents = {r["parent_hash"] for r in records}
    out = []
    for r in records:
        end = datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")).timestamp()
        history = (StatusEvent(ExperimentStatus.SUBMITTED, end - 320),
                   StatusEvent(ExperimentStatus.STARTED, end - 300),
                   StatusEvent(ExperimentStatus.FINISHED, end))
        title = (r["message"] or "").splitlines()[0][:120] if r["message"] else r["hash"][:8]
        out.append(Experiment(
            id=r["hash"][:10], hypothesis=Hypothesis(id=r["hash"][:10], title=title, source="llm"),
            base_commit=r["parent_hash"] or "root", branch=r["hash"][:10], history=history,
            slot=r["contributor_id"], result=Result("val_bpb", float(r["val_bpb"])),
            flags=("promoted",) if r["hash"] in parents else (),
        ))
        parent = by_hash.get(r["parent_hash"])
        if parent is not None:  # main as it was: its own score is the base of its children
            out.append(Experiment(
                id=f"base-{r['hash'][:10]}", hypothesis=Hypothesis(id="b", title="baseline"),
                base_commit=r["parent_hash"], branch="main", role="baseline",
                result=Result("val_bpb", float(parent["val_bpb"])),
            ))
    return out


def bench_hub(out: Path) -> dict | None:
    if not HUB_HISTORY.exists():
        return None
    from autolab.reporting.report import build_report

    t = time.perf_counter()
    lab = hub_experiments()
    load = time.perf_counter() - t
    t = time.perf_counter()
    files = build_report(out / "hub", lab, None, png=False, title="autoresearch hub history")
    return {"experiments": sum(1 for e in lab if e.role == "candidate"), "load_s": load,
            "html_and_markdown_s": time.perf_counter() - t,
            "html_bytes": files.html.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1M points, 1,000 experiments")
    ap.add_argument("--experiments", type=int, default=None)
    ap.add_argument("--producers", type=int, default=8)
    ap.add_argument("--trackio-experiments", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the data and report here")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--produce", nargs=4, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.produce:
        produce(*args.produce)
        return
    experiments = args.experiments or (1_000 if args.quick else 10_000)
    steps = 250  # x 4 metrics = 1,000 points per experiment
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    work = args.keep or tmp
    results: dict = {"experiments": experiments, "points": experiments * steps * len(NAMES),
                     "producers": args.producers, "cpus": os.cpu_count()}
    try:
        print(f"parquet: {results['points']:,} points, {experiments:,} experiments, "
              f"{args.producers} producers ...", flush=True)
        results["parquet"] = bench_parquet(work / "lab", experiments, steps, args.producers)
        print(json.dumps(results["parquet"], indent=1), flush=True)
        results["report"] = bench_report(work / "lab", experiments, work / "report")
        print(json.dumps(results["report"], indent=1), flush=True)
        tex = args.trackio_experiments or max(8, experiments // 50)
        print(f"trackio: {tex * steps * len(NAMES):,} points ...", flush=True)
        results["trackio"] = bench_trackio(work / "trackio-lab", tex, steps, args.producers)
        print(json.dumps(results["trackio"], indent=1), flush=True)
        results["hub_history"] = bench_hub(work / "report")
        print(json.dumps(results["hub_history"], indent=1), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    p, r = results["parquet"], results["report"]
    print("\nSUMMARY")
    print(f"  ingest (8 producers -> 1 writer): {p['ingest']['points_per_s']:,.0f} points/s end "
          f"to end; the writer alone {p['ingest']['writer_points_per_busy_s']:,.0f} points per "
          f"busy second; {p['rows_via_query']:,} rows verified")
    print(f"  query one metric, all experiments: {p['query_one_metric']['best_s']:.3f} s "
          f"({p['query_one_metric']['files']} files); compacted: "
          f"{p['query_one_metric_compacted']['best_s']:.3f} s   (goal < 1 s)")
    print(f"  report HTML+Markdown: {r['html_and_markdown_s']:.2f} s (goal < 5 s); with PNGs: "
          f"{r['with_pngs_s']:.2f} s; chromium DOM load: "
          f"{'-' if r['chromium_dom_s'] is None else format(r['chromium_dom_s'], '.2f')} s")
    print(f"  trackio ingest: {results['trackio']['points_per_s']:,.0f} points/s, "
          f"{results['trackio']['rows_via_sqlite']:,} rows verified")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

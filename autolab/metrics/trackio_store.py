"""``trackio``: every experiment is a Trackio run, so ``trackio show`` is the live dashboard.

``pip install 'autolab-ml[trackio]'``. Project = the lab's name, run name = run id = the experiment
id, group = the campaign, config = the hypothesis and its changed knobs (passed by the
orchestrator through :meth:`TrackioMetricStore.start`).

Where the data lives: ``$TRACKIO_DIR/<project>.db`` (SQLite), with ``TRACKIO_DIR`` defaulting
to ``<lab>/.autolab/metrics/trackio``. Trackio reads ``TRACKIO_DIR`` once, at import, so this
store sets it before it imports trackio, and refuses to start if trackio was already imported
with another directory. Dashboard: ``TRACKIO_DIR=<that dir> trackio show --project <lab>``.

Why it writes the way it does. With several writer processes, Trackio 0.43 silently lost
6,369 rows (a warning, exit code 0): its background sender drops a batch when it cannot take
the database lock. So this store is the only writer, and it writes synchronously through
``trackio.sqlite_storage.SQLiteStorage.bulk_log`` (the call Trackio's own sender makes), so a
failure raises here and the points stay buffered for the next flush. Every row carries a
unique ``log_id`` (Trackio's idempotency key), so retrying a batch never duplicates it.
``finish(experiment_id)`` reads the run back (SQLite opened read-only, ``mode=ro``, by run id)
and raises :class:`MetricsLostError` if any point it wrote is missing.

API: ``TrackioMetricStore(options, context)``; ``start(experiment_id, config, group)``,
``append(points)``, ``flush()``, ``finish(experiment_id)``,
``query(experiment_ids=None, names=None) -> pyarrow.Table``, ``export_parquet(path) -> Path``,
``db_path``, ``lost`` (points found missing, per experiment).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from autolab_core.atomic import open_atomic
from autolab_core.errors import AutolabError, PluginError
from autolab_core.interfaces import MetricStore, PluginContext
from autolab_core.models import MetricPoint
from autolab_core.validators import positive

_STRUCTURAL = ("id", "run_id", "timestamp", "run_name", "step", "log_id", "space_id")


class MetricsLostError(AutolabError):
    """Points this store wrote are missing when read back from Trackio's database."""


@attrs.frozen
class TrackioOptions:
    """``[metrics.trackio]`` options."""

    dir: str | None = None  # TRACKIO_DIR; default <state_dir>/metrics/trackio
    project: str | None = None  # default: the lab's name
    flush_points: int = attrs.field(default=5_000, validator=positive)
    flush_interval: float = attrs.field(
        default=5.0, validator=positive, metadata={"duration": True}
    )


def _iso(wall_time: float) -> str:
    return datetime.fromtimestamp(wall_time, tz=UTC).isoformat()


def _unix(timestamp: str) -> float:
    dt = datetime.fromisoformat(timestamp)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"):
        return float(value)
    return None


def _import_storage(trackio_dir: Path) -> Any:
    """``trackio.sqlite_storage.SQLiteStorage``, imported with ``TRACKIO_DIR=trackio_dir``."""
    if "trackio.utils" in sys.modules:
        current = Path(sys.modules["trackio.utils"].TRACKIO_DIR).resolve()
        if current != trackio_dir.resolve():
            raise PluginError(
                f"metric store 'trackio': trackio was already imported in this process with "
                f"TRACKIO_DIR={current}, but this lab's store needs {trackio_dir}. Trackio reads "
                f"TRACKIO_DIR once, at import: set [metrics.trackio] dir = '{current}', or "
                f"export TRACKIO_DIR={trackio_dir} before starting autolab"
            )
    previous = os.environ.get("TRACKIO_DIR")
    os.environ["TRACKIO_DIR"] = str(trackio_dir)
    try:
        from trackio.sqlite_storage import SQLiteStorage
    except ImportError as exc:
        raise PluginError(
            f"metric store 'trackio' needs trackio: pip install 'autolab-ml[trackio]' ({exc})"
        ) from None
    finally:  # jobs started from this process must not inherit our TRACKIO_DIR
        if previous is None:
            os.environ.pop("TRACKIO_DIR", None)
        else:
            os.environ["TRACKIO_DIR"] = previous
    for attr in ("bulk_log", "get_project_db_path", "export_for_static_space", "init_db"):
        if not hasattr(SQLiteStorage, attr):
            raise PluginError(
                f"metric store 'trackio': this trackio has no SQLiteStorage.{attr}; install a "
                f"tested version: pip install 'trackio>=0.40,<0.50'"
            )
    return SQLiteStorage


class TrackioMetricStore(MetricStore):
    """Metric points as Trackio runs; one synchronous writer, verified on finish."""

    name = "trackio"
    description = "Trackio runs (trackio show is the live dashboard); pip install 'autolab-ml[trackio]'"
    options_class = TrackioOptions
    opts: TrackioOptions

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("trackio") is None:
            return "trackio is not installed: pip install 'autolab-ml[trackio]'"
        return None

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        if self.opts.dir is None:
            self.dir = Path(context.state_dir) / "metrics" / "trackio"
        else:
            given = Path(self.opts.dir).expanduser()
            self.dir = given if given.is_absolute() else Path(context.lab_root) / given
        self.dir.mkdir(parents=True, exist_ok=True)
        self.project = self.opts.project or context.lab_name or "lab"
        self._storage = _import_storage(self.dir)
        try:
            self._storage.validate_project_name(self.project)
        except (ValueError, AttributeError) as exc:
            raise PluginError(
                f"metric store 'trackio': lab name {self.project!r} is not a valid Trackio "
                f"project ({exc}); set [metrics.trackio] project = '<another name>'"
            ) from None
        self.db_path = Path(self._storage.get_project_db_path(self.project))
        self._lock = threading.RLock()
        self._buffer: list[tuple[MetricPoint, str]] = []  # (point, log_id)
        self._first_buffered: float | None = None
        self._configs: dict[str, dict[str, Any]] = {}  # config not yet written, per run
        self._written: dict[str, dict[str, int]] = {}  # run -> log_id -> values in that row
        self.lost: dict[str, int] = {}

    # -- writing -----------------------------------------------------------------------------
    def start(
        self, experiment_id: str, config: Mapping[str, Any] | None = None, group: str | None = None
    ) -> None:
        """Declare the run: its config (hypothesis, changed knobs) and group (campaign).

        Trackio reserves config keys starting with ``_``; such keys get a ``cfg`` prefix.
        """
        clean = {(f"cfg{k}" if str(k).startswith("_") else str(k)): v
                 for k, v in dict(config or {}).items()}
        clean = json.loads(json.dumps(clean, default=str))
        clean.update({"_Group": group, "_Created": _iso(time.time()), "_Username": None})
        with self._lock:
            self._configs[experiment_id] = clean

    def append(self, points: Sequence[MetricPoint]) -> None:
        """Buffer ``points``; they are written every ``flush_points`` / ``flush_interval``."""
        if not points:
            return
        with self._lock:
            if self._first_buffered is None:
                self._first_buffered = time.monotonic()
            self._buffer.extend((p, "") for p in points)
            old = time.monotonic() - self._first_buffered >= self.opts.flush_interval
            if len(self._buffer) >= self.opts.flush_points or old:
                self.flush()

    def _rows(self) -> Iterator[tuple[str, int, str, dict[str, float], list[int]]]:
        """Buffered points grouped into Trackio rows: (run, step, timestamp, metrics, indices).

        Points of one run with the same step and wall time share a row, as one
        ``AUTOLAB_METRIC`` line does; a repeated name starts a new row, so nothing is merged.
        Points that already have a ``log_id`` (from a failed flush) keep their old row.
        """
        open_rows: dict[tuple[str, int, float, str], tuple[dict[str, float], list[int]]] = {}
        for i, (p, lid) in enumerate(self._buffer):
            key = (p.experiment_id, int(p.step), float(p.wall_time), lid)
            row = open_rows.get(key)
            if row is not None and p.name in row[0]:
                yield key[0], key[1], _iso(key[2]), row[0], row[1]
                row = None
            if row is None:
                row = open_rows[key] = ({}, [])
            row[0][p.name] = float(p.value)
            row[1].append(i)
        for (run, step, wall, _), (metrics, idx) in open_rows.items():
            yield run, step, _iso(wall), metrics, idx

    def flush(self) -> None:
        """Write buffered points to Trackio's SQLite; on error they stay buffered."""
        with self._lock:
            if not self._buffer:
                return
            by_run: dict[str, list[tuple[int, str, dict[str, float], str]]] = {}
            for run, step, ts, metrics, idx in self._rows():
                # A row keeps its log_id across retries; Trackio inserts with OR IGNORE.
                lid = self._buffer[idx[0]][1] or f"{run}/{uuid.uuid4().hex}"
                for i in idx:
                    self._buffer[i] = (self._buffer[i][0], lid)
                by_run.setdefault(run, []).append((step, ts, metrics, lid))
            done: set[str] = set()
            try:
                for run, rows in by_run.items():
                    self._storage.bulk_log(
                        project=self.project,
                        run=run,
                        run_id=run,
                        metrics_list=[m for _, _, m, _ in rows],
                        steps=[s for s, _, _, _ in rows],
                        timestamps=[t for _, t, _, _ in rows],
                        config=self._configs.get(run),
                        log_ids=[lid for _, _, _, lid in rows],
                    )
                    done.add(run)
                    self._configs.pop(run, None)
                    written = self._written.setdefault(run, {})
                    for _, _, m, lid in rows:
                        written[lid] = len(m)
            finally:
                self._buffer = [b for b in self._buffer if b[0].experiment_id not in done]
                if not self._buffer:
                    self._first_buffered = None

    def finish(self, experiment_id: str) -> None:
        """Write everything, then check that every point of the run reads back.

        Raises :class:`MetricsLostError` naming the count when some are missing (also kept in
        ``self.lost`` so the orchestrator can flag the experiment).
        """
        self.flush()
        with self._lock:
            written = self._written.pop(experiment_id, {})
        if not written:
            return
        found = self._read_back_counts(experiment_id)
        expected = sum(written.values())
        got = sum(min(found.get(lid, 0), n) for lid, n in written.items())
        if got != expected:
            self.lost[experiment_id] = expected - got
            raise MetricsLostError(
                f"trackio store: experiment {experiment_id}: wrote {expected} points but read "
                f"back {got} from {self.db_path}; {expected - got} are missing. Something else "
                f"is writing to this Trackio project (Trackio loses rows under concurrent "
                f"writers): make autolab the only writer of {self.dir}, or use "
                f"[metrics] store = 'parquet'"
            )

    def close(self) -> None:
        self.flush()

    # -- reading -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)

    def _select(self, sql: str, run_ids: Sequence[str] | None) -> Iterator[tuple[Any, ...]]:
        if not self.db_path.exists():
            return
        conn = self._connect()
        try:
            if run_ids is None:
                yield from conn.execute(sql.format(where=""))
                return
            ids = list(dict.fromkeys(run_ids))
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                where = f"WHERE run_id IN ({','.join('?' * len(chunk))})"
                yield from conn.execute(sql.format(where=where), chunk)
        finally:
            conn.close()

    def _read_back_counts(self, experiment_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lid, blob in self._select("SELECT log_id, metrics FROM metrics {where}", [experiment_id]):
            values = json.loads(blob)
            counts[lid] = sum(1 for v in values.values() if _number(v) is not None)
        return counts

    def query(
        self,
        experiment_ids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> Any:
        """Points read back from Trackio's SQLite (read-only), plus buffered ones."""
        import pyarrow as pa

        from autolab.metrics.schema import SCHEMA, SORT_KEYS, filter_table, points_to_table

        wanted = None if names is None else set(names)
        cols: dict[str, list[Any]] = {c: [] for c in SCHEMA.names}
        exp_col, step_col, name_col = cols["experiment_id"], cols["step"], cols["name"]
        value_col, wall_col = cols["value"], cols["wall_time"]
        with self._lock:
            rows = list(self._select(
                "SELECT run_id, step, timestamp, metrics FROM metrics {where}", experiment_ids
            ))
            buffered = [p for p, _ in self._buffer]
        for run_id, step, ts, blob in rows:
            wall = _unix(ts)
            for name, raw in json.loads(blob).items():
                value = _number(raw)
                if value is None or name.startswith("_") or (wanted is not None and name not in wanted):
                    continue
                exp_col.append(run_id)
                step_col.append(step)
                name_col.append(name)
                value_col.append(value)
                wall_col.append(wall)
        table = pa.table(cols, schema=SCHEMA)
        extra = filter_table(points_to_table(buffered), experiment_ids, names)
        if extra.num_rows:
            table = pa.concat_tables([table, extra])
        return table.sort_by(SORT_KEYS)

    def export_parquet(self, path: Path) -> Path:
        """Export through Trackio's own Parquet export, then write it in autolab's long format
        (experiment_id, step, name, value, wall_time) to ``path`` (``path/metrics.parquet``
        unless it ends in ``.parquet``); counts are verified."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from autolab.metrics.schema import SCHEMA, SORT_KEYS

        self.flush()
        path = Path(path)
        if path.suffix != ".parquet" or path.is_dir():
            path = path / "metrics.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        cols: dict[str, list[Any]] = {c: [] for c in SCHEMA.names}
        if self.db_path.exists():
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                self._storage.export_for_static_space(self.project, Path(tmp))
                wide_path = Path(tmp) / "metrics.parquet"
                wide = pq.read_table(wide_path) if wide_path.exists() else None
            if wide is not None:
                run = wide.column("run_id").to_pylist()
                step = wide.column("step").to_pylist()
                wall = [_unix(t) for t in wide.column("timestamp").to_pylist()]
                for name in wide.column_names:
                    if name in _STRUCTURAL or name.startswith("_"):
                        continue
                    for i, raw in enumerate(wide.column(name).to_pylist()):
                        value = _number(raw)
                        if value is None:
                            continue
                        cols["experiment_id"].append(run[i])
                        cols["step"].append(int(step[i]))
                        cols["name"].append(name)
                        cols["value"].append(value)
                        cols["wall_time"].append(wall[i])
        table = pa.table(cols, schema=SCHEMA).sort_by(SORT_KEYS)
        expected = self.query().num_rows
        if table.num_rows != expected:
            raise MetricsLostError(
                f"trackio store: Trackio's Parquet export of project {self.project!r} holds "
                f"{table.num_rows} points but its database holds {expected}; export again, "
                f"or read {self.db_path} directly"
            )
        with open_atomic(path) as fh:
            pq.write_table(table, fh, compression="zstd")
        return path


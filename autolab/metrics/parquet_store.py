"""``parquet``: the default metric store, an append-only Parquet dataset in the lab's state dir.

Layout (``<lab>/.autolab/metrics/`` unless ``[metrics.parquet] dir`` says otherwise)::

    L0-<seq>-<id>.parquet    points flushed together (sorted by name, experiment, step)
    L1-<seq>-<id>.parquet    up to ``compact_fanout`` L0 files merged; L2 merges L1 files ...
    .<name>.tmp              a file being written; never read, removed on open

Rules that make it crash-safe:

* A completed ``*.parquet`` file is never rewritten. Every file is written to a hidden ``.tmp``
  name, fsynced, then renamed into place with ``os.replace`` (atomic), and the directory is
  fsynced. A crash leaves either the whole file or no file.
* Compaction writes the merged file first, with the names of the files it replaces in its
  Parquet metadata (``autolab.replaces``), and only then deletes them. A crash between the two
  leaves both, and readers of this store skip every file that a merged file replaces; the next
  open finishes the deletion. So a crash mid-compaction neither loses nor duplicates a point.
* One writer: the store holds an exclusive ``flock`` on ``.writer.lock`` while open. A second
  instance (``autolab status`` in another shell) opens read-only: it can ``query`` but not
  write, and it never runs recovery, so it cannot disturb the writer's files.
* Points are buffered in memory and become durable on ``flush``, ``finish``, ``close``, or
  automatically every ``flush_points`` points or ``flush_interval`` seconds. The orchestrator
  treats a point as acknowledged once one of those returned.

Any Parquet reader can read the directory directly (pyarrow, DuckDB, polars, pandas: see
``docs/metrics.md``). Outside readers may see a merged file and its inputs together for the
few milliseconds between the rename and the deletions; ``query`` never does.

API: ``ParquetMetricStore(options, context)``; ``append(points)``, ``flush()``,
``finish(experiment_id)``, ``query(experiment_ids=None, names=None) -> pyarrow.Table``,
``export_parquet(path) -> Path``, ``compact(full=False)``, ``files() -> list[Path]``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from autolab_core.atomic import fsync_dir, open_atomic
from autolab_core.errors import PluginError
from autolab_core.interfaces import MetricStore, PluginContext
from autolab_core.models import MetricPoint
from autolab_core.validators import positive

_NAME = re.compile(r"^L(\d+)-(\d+)-([0-9a-f]+)\.parquet$")
_REPLACES_KEY = b"autolab.replaces"


@attrs.frozen
class ParquetOptions:
    """``[metrics.parquet]`` options."""

    dir: str | None = None  # default: <state_dir>/metrics; relative paths are from the lab root
    flush_points: int = attrs.field(default=50_000, validator=positive)
    flush_interval: float = attrs.field(
        default=30.0, validator=positive, metadata={"duration": True}
    )
    compact_fanout: int = attrs.field(default=16, validator=positive)
    row_group_size: int = attrs.field(default=128 * 1024, validator=positive)
    compression: str = attrs.field(
        default="zstd", metadata={"choices": ["zstd", "snappy", "gzip", "lz4", "none"]}
    )




class ParquetMetricStore(MetricStore):
    """Append-only Parquet dataset; fast filtered queries through ``pyarrow.dataset``."""

    name = "parquet"
    description = "Append-only Parquet dataset in the lab's state dir (default)"
    options_class = ParquetOptions
    opts: ParquetOptions

    def __init__(self, options: dict[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        if self.opts.dir is None:
            self.root = Path(context.state_dir) / "metrics"
        else:
            given = Path(self.opts.dir).expanduser()
            self.root = given if given.is_absolute() else Path(context.lab_root) / given
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._buffer: list[tuple[str, int, str, float, float]] = []
        self._first_buffered: float | None = None
        self._replaces: dict[str, tuple[str, ...]] = {}  # merged file -> files it replaces
        self._seq = time.time_ns()
        self._lock_file: Any = None
        self.writable = self._take_writer_lock()
        if self.writable:
            self._recover()

    # -- the writer lock ---------------------------------------------------------------------
    def _take_writer_lock(self) -> bool:
        """Hold ``.writer.lock`` (flock) for this store's life; False if another holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: trust the single-writer rule
            return True
        fh = open(self.root / ".writer.lock", "a+")  # held until close()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh
        return True

    def _check_writable(self) -> None:
        if not self.writable:
            raise PluginError(
                f"metric store 'parquet': another process is writing to {self.root} (see "
                f"{self.root / '.writer.lock'}); this instance can only read. Stop the other "
                f"autolab process, or open the store only to query"
            )

    # -- files -------------------------------------------------------------------------------
    def _next_name(self, level: int) -> str:
        self._seq = max(self._seq + 1, time.time_ns())
        return f"L{level}-{self._seq:020d}-{uuid.uuid4().hex[:8]}.parquet"

    def _replaced_by(self, name: str) -> tuple[str, ...]:
        """Files that merged file ``name`` replaces (read once; files never change)."""
        if name not in self._replaces:
            import pyarrow.parquet as pq

            meta = pq.read_schema(self.root / name).metadata or {}
            raw = meta.get(_REPLACES_KEY)
            self._replaces[name] = tuple(json.loads(raw)) if raw else ()
        return self._replaces[name]

    def _scan(self) -> tuple[list[str], set[str]]:
        names = sorted(n for n in os.listdir(self.root) if _NAME.match(n))
        replaced: set[str] = set()
        for n in names:
            if not n.startswith("L0-"):
                replaced.update(self._replaced_by(n))
        return names, replaced

    def _live(self) -> list[str]:
        names, replaced = self._scan()
        return [n for n in names if n not in replaced]

    def files(self) -> list[Path]:
        """The Parquet files that currently hold this store's points."""
        with self._lock:
            return [self.root / n for n in self._live()]

    def _recover(self) -> None:
        """Remove half-written temp files and finish any interrupted compaction."""
        with self._lock:
            for n in os.listdir(self.root):
                if n.startswith(".") and n.endswith(".tmp"):
                    (self.root / n).unlink(missing_ok=True)
            names, replaced = self._scan()
            for n in names:
                if n in replaced:
                    (self.root / n).unlink(missing_ok=True)
            fsync_dir(self.root)

    def _write_file(self, table: Any, level: int, replaces: Sequence[str] = ()) -> str:
        import pyarrow.parquet as pq

        name = self._next_name(level)
        if replaces:
            meta = dict(table.schema.metadata or {})
            meta[_REPLACES_KEY] = json.dumps(list(replaces)).encode()
            table = table.replace_schema_metadata(meta)
        compression = None if self.opts.compression == "none" else self.opts.compression
        with open_atomic(self.root / name, durable_dir=True) as fh:
            pq.write_table(
                table, fh, row_group_size=self.opts.row_group_size, compression=compression,
                use_dictionary=["experiment_id", "name"], write_statistics=True,
            )
        if replaces:
            self._replaces[name] = tuple(replaces)
        return name

    # -- writing -----------------------------------------------------------------------------
    def append(self, points: Sequence[MetricPoint]) -> None:
        """Buffer ``points``; writes a part file when the buffer is full or old enough."""
        if not points:
            return
        self._check_writable()
        with self._lock:
            if self._first_buffered is None:
                self._first_buffered = time.monotonic()
            self._buffer.extend(
                (p.experiment_id, int(p.step), p.name, float(p.value), float(p.wall_time))
                for p in points
            )
            old = time.monotonic() - self._first_buffered >= self.opts.flush_interval
            if len(self._buffer) >= self.opts.flush_points or old:
                self.flush()

    def _buffer_table(self) -> Any:
        import pyarrow as pa

        from autolab.metrics.schema import SCHEMA

        cols: list[Sequence[Any]] = (
            list(zip(*self._buffer, strict=True)) if self._buffer else [()] * 5
        )
        return pa.table(
            [pa.array(c, f.type) for c, f in zip(cols, SCHEMA, strict=True)], schema=SCHEMA
        )

    def flush(self) -> None:
        """Write buffered points to a new part file (atomically) and compact if due."""
        from autolab.metrics.schema import SORT_KEYS

        with self._lock:
            if not self._buffer:
                return
            self._check_writable()
            table = self._buffer_table().sort_by(SORT_KEYS)
            self._write_file(table, 0)
            self._buffer.clear()
            self._first_buffered = None
            self._maybe_compact()

    def finish(self, experiment_id: str) -> None:
        """No more points for ``experiment_id``: make everything buffered durable."""
        self.flush()

    def close(self) -> None:
        """Flush, then let another process become the writer."""
        self.flush()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
            self.writable = False

    # -- compaction --------------------------------------------------------------------------
    def _maybe_compact(self) -> None:
        fanout = self.opts.compact_fanout
        if fanout < 2:
            return
        while True:
            by_level: dict[int, list[str]] = {}
            for n in self._live():
                by_level.setdefault(int(_NAME.match(n).group(1)), []).append(n)  # type: ignore[union-attr]
            due = [lvl for lvl, names in sorted(by_level.items()) if len(names) >= fanout]
            if not due:
                return
            level = due[0]
            self._merge(sorted(by_level[level])[:fanout], level + 1)

    def _merge(self, names: Sequence[str], level: int) -> str:
        import pyarrow.dataset as ds

        from autolab.metrics.schema import SCHEMA, SORT_KEYS

        dataset = ds.dataset([str(self.root / n) for n in names], schema=SCHEMA, format="parquet")
        table = dataset.to_table().sort_by(SORT_KEYS)
        merged = self._write_file(table, level, replaces=names)
        for n in names:  # the merged file is durable; now the inputs may go
            (self.root / n).unlink(missing_ok=True)
        fsync_dir(self.root)
        return merged

    def compact(self, full: bool = False) -> list[Path]:
        """Merge files now: by level as usual, or with ``full`` everything into one file."""
        self._check_writable()
        with self._lock:
            self.flush()
            live = self._live()
            if full and len(live) > 1:
                top = max(int(_NAME.match(n).group(1)) for n in live)  # type: ignore[union-attr]
                self._merge(live, top + 1)
            else:
                self._maybe_compact()
            return [self.root / n for n in self._live()]

    # -- reading -----------------------------------------------------------------------------
    def query(
        self,
        experiment_ids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> Any:
        """Points as a ``pyarrow.Table`` (:data:`~autolab.metrics.schema.SCHEMA`), buffered
        points included, sorted by name, experiment_id, step."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        from autolab.metrics.schema import SCHEMA, SORT_KEYS, filter_table

        expr = None
        if experiment_ids is not None:
            expr = pc.field("experiment_id").isin(list(experiment_ids))
        if names is not None:
            by_name = pc.field("name").isin(list(names))
            expr = by_name if expr is None else expr & by_name
        with self._lock:
            buffered = filter_table(self._buffer_table(), experiment_ids, names)
            for attempt in range(5):  # a reader may race the writer's compaction: rescan
                live = self._live()
                parts = []
                try:
                    if live:
                        dataset = ds.dataset(
                            [str(self.root / n) for n in live], schema=SCHEMA, format="parquet"
                        )
                        parts.append(dataset.to_table(filter=expr))
                    break
                except FileNotFoundError:
                    if self.writable or attempt == 4:
                        raise
                    time.sleep(0.05)
        if buffered.num_rows:
            parts.append(buffered)
        if not parts:
            return SCHEMA.empty_table()
        if len(parts) == 1 and live:  # one file, written sorted: filtering keeps the order
            return parts[0]
        return pa.concat_tables(parts).sort_by(SORT_KEYS)

    def export_parquet(self, path: Path) -> Path:
        """Write every point to one Parquet file at ``path`` (``path/metrics.parquet`` unless
        ``path`` ends in ``.parquet``), atomically."""
        import pyarrow.parquet as pq

        path = Path(path)
        if path.suffix != ".parquet" or path.is_dir():
            path = path / "metrics.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.query()
        with open_atomic(path) as fh:
            pq.write_table(table, fh, compression="zstd")
        return path

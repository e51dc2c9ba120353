"""Atomic file writes and small JSON records. Standard library only (job supervisors use it).

:func:`write_atomic` is the one way autolab replaces a file: a temporary file in the same
directory, flushed and fsynced, then renamed over the target, so a reader (or a crash) sees
either the old content or the new, never half of it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def _write_temp(path: Path, data: str | bytes, fsync: bool) -> Path:
    tmp = _temp_name(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in directory ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str], *, fsync: bool = True,
                durable_dir: bool = False) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` when the ``with`` block ends without an error.

    For writers that stream (``pyarrow.parquet.write_table(table, fh)``); on an error the
    temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    tmp = _temp_name(target)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable_dir:
        fsync_dir(target.parent)


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, fsync: bool = True,
                 durable_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically.

    ``fsync=False`` skips the flush to disk when only atomicity towards readers matters;
    ``durable_dir=True`` also fsyncs the directory so the rename survives a power cut.
    """
    with open_atomic(path, fsync=fsync, durable_dir=durable_dir) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | list | set | frozenset):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(data: Any) -> str:
    """``data`` as indented, key-sorted JSON (tuples, mappings and enums allowed)."""
    return json.dumps(data, indent=1, sort_keys=True, default=_jsonable)


def write_json(path: Path, data: Any, *, fsync: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    write_atomic(path, dumps(data), fsync=fsync)


def write_json_once(path: Path, data: Any) -> bool:
    """Create ``path`` with ``data`` unless it exists; True when this call created it.

    A hard link of a complete temporary file makes the file appear whole, and only once.
    """
    tmp = _write_temp(path, dumps(data), fsync=True)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: atomic, but not exclusive
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None

"""Content hashes of file sets: the evaluation hash and the code hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path


def content_hash(files: Mapping[str, str | bytes]) -> str:
    """A stable sha256 over file names and contents (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        raw = data.encode() if isinstance(data, str) else data
        digest.update(name.encode() + b"\0" + str(len(raw)).encode() + b"\0" + raw)
    return digest.hexdigest()


def hash_paths(root: Path, paths: list[str] | tuple[str, ...]) -> str:
    """:func:`content_hash` of ``paths`` read from ``root`` (a missing file hashes as empty)."""
    files = {p: (root / p).read_bytes() if (root / p).is_file() else b"" for p in paths}
    return content_hash(files)


def expand_globs(root: Path, globs: list[str] | tuple[str, ...]) -> list[str]:
    """Files under ``root`` matching any of ``globs`` (``**`` allowed), as sorted relative
    paths. A glob that escapes ``root`` is an error."""
    found: set[str] = set()
    base = root.resolve()
    for pattern in globs:
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise ValueError(f"protected_data glob {pattern!r} must be relative to the lab root")
        for path in root.glob(pattern):
            if path.is_file() and path.resolve().is_relative_to(base):
                found.add(path.relative_to(root).as_posix())
    return sorted(found)


def hash_globs(root: Path, globs: list[str] | tuple[str, ...]) -> str:
    """:func:`content_hash` of the files matching ``globs`` under ``root`` (their names too, so
    an added or removed file changes the hash)."""
    return content_hash({p: (root / p).read_bytes() for p in expand_globs(root, globs)})

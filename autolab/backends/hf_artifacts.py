"""Artifacts back from an HF job: the run's output directory, uploaded to the lab's code repo.

This file is copied into every job's code archive (``.autolab-runtime/autolab_artifacts.py``)
and run there after the experiment's command, so it uses the standard library only. It speaks
the Hub's commit protocol as ``huggingface_hub``'s ``_commit_api`` does: ``preupload`` asks
the Hub how each file must travel; files it accepts as ``regular`` go base64-encoded in one
NDJSON commit; files it wants as LFS/Xet (large or binary) need ``huggingface_hub`` and are
listed as skipped, never silently dropped.

Usage: ``python autolab_artifacts.py ENDPOINT REPO_ID PATH_IN_REPO`` with ``HF_TOKEN`` and
``AUTOLAB_OUTPUT_DIR`` in the environment. Prints one ``AUTOLAB_ARTIFACTS {json}`` line.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request
from pathlib import Path

SCRIPT_NAME = "autolab_artifacts.py"
#: Files larger than this are not uploaded (the Hub wants them as LFS/Xet anyway).
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 200


def source() -> str:
    """This module's source, as shipped inside a job's code archive."""
    return Path(__file__).read_text()


def _post(url: str, token: str, body: bytes, content_type: str) -> dict[str, object]:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return dict(json.loads(resp.read() or b"{}"))


def upload(endpoint: str, repo_id: str, prefix: str, out_dir: Path, token: str) -> dict[str, object]:
    """Upload ``out_dir``'s files under ``prefix`` in dataset ``repo_id``; return a summary."""
    files = sorted(p for p in out_dir.rglob("*") if p.is_file()) if out_dir.is_dir() else []
    skipped = [str(p.relative_to(out_dir)) for p in files[MAX_FILES:]]
    files = files[:MAX_FILES]
    skipped += [str(p.relative_to(out_dir)) for p in files if p.stat().st_size > MAX_FILE_BYTES]
    files = [p for p in files if p.stat().st_size <= MAX_FILE_BYTES]
    base = f"{endpoint}/api/datasets/{repo_id}"
    url = f"{endpoint}/datasets/{repo_id}/tree/main/{prefix}"
    if not files:
        return {"url": None, "files": [], "skipped": skipped}
    paths = {f"{prefix}/{p.relative_to(out_dir).as_posix()}": p for p in files}
    answer = _post(f"{base}/preupload/main", token, json.dumps({"files": [
        {"path": path, "sample": base64.b64encode(p.read_bytes()[:512]).decode(),
         "size": p.stat().st_size} for path, p in paths.items()]}).encode(), "application/json")
    modes = {str(f["path"]): f for f in answer.get("files", [])}  # type: ignore[union-attr]
    lines = [{"key": "header", "value": {"summary": f"autolab: artifacts {prefix}",
                                         "description": ""}}]
    sent = []
    for path, p in paths.items():
        info = modes.get(path, {})
        if info.get("shouldIgnore"):
            continue
        if info.get("uploadMode") != "regular" and p.stat().st_size > 0:
            skipped.append(str(p.relative_to(out_dir)))
            continue
        lines.append({"key": "file", "value": {
            "content": base64.b64encode(p.read_bytes()).decode(), "path": path,
            "encoding": "base64"}})
        sent.append(str(p.relative_to(out_dir)))
    if sent:
        body = "\n".join(json.dumps(line) for line in lines).encode()
        _post(f"{base}/commit/main", token, body, "application/x-ndjson")
    return {"url": url if sent else None, "files": sent, "skipped": skipped}


def main(argv: list[str]) -> int:
    endpoint, repo_id, prefix = argv[:3]
    out_dir = Path(os.environ.get("AUTOLAB_OUTPUT_DIR", ".autolab-out"))
    token = os.environ.get("HF_TOKEN", "")
    summary = upload(endpoint.rstrip("/"), repo_id, prefix, out_dir, token)
    if summary["files"] or summary["skipped"]:
        print("AUTOLAB_ARTIFACTS " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The repo half of :mod:`hf_fake_hub`: create, info, tree, preupload/commit, resolve.

A mixin of :class:`hf_fake_hub.FakeHub` (it uses its ``lock``, ``repos``, ``namespace`` and
``url``); written from ``huggingface_hub``'s ``hf_api.py``, ``_commit_api.py`` and
``file_download.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any


class FakeRepos:
    """Repos of the stand-in Hub: ``(type, repo_id) -> {files, sha, history, private}``."""

    lock: threading.Lock
    repos: dict[tuple[str, str], dict[str, Any]]
    namespace: str
    url: str

    # -- repos -------------------------------------------------------------------------------
    def _create_repo(self, h: Any, payload: dict[str, Any]) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.namespace}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        with self.lock:
            if (repo_type, repo_id) in self.repos:  # the Hub's 409 carries the url too
                return h._send(409, {"error": f"You already created this {repo_type} repo",
                                     "url": url})
            self.repos[(repo_type, repo_id)] = {
                "files": {}, "sha": hashlib.sha1(repo_id.encode()).hexdigest(), "history": {},
                "private": payload.get("visibility", "public") == "private"
                or bool(payload.get("private")),
            }
        return h._send(200, {"url": url, "name": repo_id})

    def _commit(self, h: Any, repo: tuple[str, str], body: bytes) -> None:
        with self.lock:
            state = self.repos.get(repo)
            if state is None:
                return h._error(404, f"Repository {repo[1]} not found")
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    state["files"][value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    if state["files"].pop(item["value"]["path"], None) is None:
                        return h._error(404, f"{item['value']['path']} does not exist")
                elif item["key"] == "deletedFolder":
                    prefix = item["value"]["path"].rstrip("/") + "/"
                    for path in [k for k in state["files"] if k.startswith(prefix)]:
                        del state["files"][path]
                elif item["key"] != "header":
                    return h._error(400, f"fake hub: commit key {item['key']!r} not supported")
            state["sha"] = hashlib.sha1(state["sha"].encode() + body).hexdigest()
            sha = state["sha"]
            state["history"][sha] = dict(state["files"])
        prefix = "" if repo[0] == "model" else f"{repo[0]}s/"
        return h._send(200, {"commitUrl": f"{self.url}/{prefix}{repo[1]}/commit/{sha}",
                             "commitOid": sha, "success": True, "pullRequestUrl": None})

    def _resolve(self, h: Any, method: str, p: list[str]) -> None:
        repo_type = "model"
        if p and p[0] in ("datasets", "spaces"):
            repo_type, p = p[0][:-1], p[1:]
        if len(p) < 5 or p[2] != "resolve":
            return h._error(404, f"fake hub: no route for {method} /{'/'.join(p)}")
        state = self.repos.get((repo_type, f"{p[0]}/{p[1]}"))
        if state is None:
            return h._error(404, "Repository not found")
        files = state["files"] if p[3] == "main" else state["history"].get(p[3])
        if files is None:
            return h._send(404, {"error": f"Invalid rev id: {p[3]}"},
                           headers={"X-Error-Code": "RevisionNotFound"})
        data = files.get("/".join(p[4:]))
        if data is None:
            return h._send(404, {"error": "Entry not found"},
                           headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": state["sha"]})
        etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return h._send(200, raw=data, head=method == "HEAD",
                       headers={"X-Repo-Commit": state["sha"], "ETag": f'"{etag}"'})

    def _repo_info(self, h: Any, repo: tuple[str, str]) -> None:
        state = self.repos.get(repo)
        if state is None:
            return h._send(404, {"error": "Repository not found"},
                           headers={"X-Error-Code": "RepoNotFound"})
        return h._send(200, {"id": repo[1], "_id": hashlib.sha1(repo[1].encode()).hexdigest()[:24],
                             "private": state["private"], "sha": state["sha"], "disabled": False,
                             "gated": False, "siblings": [{"rfilename": k} for k in state["files"]]})

    def _tree(self, h: Any, repo: tuple[str, str], rev: str, path: str,
              query: dict[str, str]) -> None:
        state = self.repos.get(repo)
        if state is None:
            return h._send(404, {"error": "Repository not found"},
                           headers={"X-Error-Code": "RepoNotFound"})
        prefix = path.rstrip("/") + "/" if path else ""
        recursive = query.get("recursive", "False").lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sorted(state["files"].items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if "/" in rest and not recursive:
                folder = prefix + rest.split("/")[0]
                entries[folder] = {"type": "directory", "path": folder, "oid": "0" * 40}
            else:
                entries[name] = {"type": "file", "path": name, "size": len(data),
                                 "oid": hashlib.sha1(data).hexdigest()}
        if path and not entries:
            return h._send(404, {"error": f"{path} not found"},
                           headers={"X-Error-Code": "EntryNotFound"})
        return h._send(200, list(entries.values()))


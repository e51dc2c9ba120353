r"""A local stand-in for the Hugging Face Hub, for tests: NOT the Hub, a fake of its wire protocol.

:class:`FakeHub` is an HTTP server on ``127.0.0.1`` (port 0, a daemon thread) that answers the
requests ``huggingface_hub`` 2.x sends for Jobs and for the few repo operations autolab's
``hf-jobs`` backend uses. It *actually runs* each submitted job's ``command`` as a local
subprocess (the image is ignored), with the job's environment and secrets as environment
variables, in a fresh directory under ``root/jobs/<id>`` (its ``HOME`` and ``TMPDIR``), so a
whole ``autolab run`` session can go end to end without the network.

Endpoints (checked against huggingface_hub 2.4's ``hf_api.py``, ``_jobs_api.py``,
``_commit_api.py`` and ``file_download.py``):

- ``GET /api/whoami-v2``
- ``POST /api/jobs/{ns}`` (run), ``GET /api/jobs/{ns}`` (list; ``label=k=v`` and ``stage=``
  filters), ``GET /api/jobs/{ns}/{id}`` (inspect), ``POST /api/jobs/{ns}/{id}/cancel``,
  ``GET /api/jobs/{ns}/{id}/logs`` (server-sent events ``data: {"timestamp", "data"}``, replayed
  from the start on every connection; held open while the job runs), ``GET /api/jobs/hardware``
- ``POST /api/repos/create``, ``POST /api/{type}s/{repo}/preupload/{rev}`` (always answers
  ``regular``: files travel base64 inside the commit), ``POST /api/{type}s/{repo}/commit/{rev}``
  (NDJSON), ``HEAD``/``GET /{type}s/{repo}/resolve/{rev}/{path}`` (``/{repo}/...`` for models)

Jobs run in a *fresh* environment: a virtual environment without site-packages (so autolab
and every package of this machine are missing), ``PIP_NO_INDEX=1`` and an unreachable index
URL, and only the job's own environment and secrets. A job that needs anything the image would
not have fails here as it would on the Hub.

The stand-in is strict where the Hub is: a job spec with unknown keys, an unknown flavor, a
label outside ``[A-Za-z0-9_-]`` or a volume that is not ``{type, source, mountPath}`` of a known
repo is refused with 400/404; ``resolve`` serves only ``main`` or a commit the repo really had;
``preupload`` asks for LFS above 10 MB (this stand-in cannot take LFS uploads); a job the test
:meth:`FakeHub.forget`\ s answers 404, as a job the Hub no longer knows does.

Also served: ``GET /api/{type}s/{repo}`` (repo info, with ``private``), ``GET
/api/{type}s/{repo}/tree/{rev}[/path]`` (listing), ``deletedFile``/``deletedFolder`` commit
lines and ``GET /api/jobs/{ns}/{id}/metrics``
(SSE ``event: metric`` samples every 0.2 s while the job runs, 406 once it ended; GPU flavors
report one GPU whose utilisation is a stand-in number).

Every request must carry ``Authorization: Bearer <token>``; a missing or wrong token gets 401, so
tests prove the token travels where it should. What the server received is kept in
:attr:`FakeHub.jobs` (each job's JSON spec, secrets included) and :attr:`FakeHub.requests`.

Simulated outcomes: exit code 0 -> ``COMPLETED``; exit code 137 -> ``ERROR`` with ``Job failed
with exit code: 137. Reason: OOMKilled`` (how the Hub reports an out-of-memory kill); any other
code -> ``ERROR`` ``Job failed with exit code: N.``; ``timeoutSeconds`` reached -> the process
group is killed and the job ends in ``ERROR`` with ``Job timed out after N seconds.`` (the real
Hub's wording for that case is not documented; this is a stand-in); cancel -> ``CANCELED``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hf_fake_job import HARDWARE, TERMINAL, FakeJob, bare_python_dir, hardware_json, iso
from hf_fake_repos import FakeRepos

__all__ = ["HARDWARE", "TERMINAL", "FakeHub", "FakeJob", "bare_python_dir", "iso"]

_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")
_SPEC_KEYS = {"command", "arguments", "environment", "secrets", "flavor", "timeoutSeconds",
              "labels", "volumes", "dockerImage", "spaceId", "attempts", "expose", "ssh",
              "network", "resourceGroupId"}
_VOLUME_TYPES = {"bucket", "model", "dataset", "space"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: Mapping[str, str] | None = None,
              raw: bytes | None = None, head: bool = False) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)  # adds the one Date header the client compares against
        self.send_header("Content-Type", "application/json" if raw is None else
                         "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        body = self._body() if method == "POST" else b""
        query = parse_qsl(url.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        with hub.lock:
            hub.requests.append({"method": method, "path": url.path, "query": query,
                                 "headers": headers, "body": body})
        if self.headers.get("Authorization") != f"Bearer {hub.token}":
            self._error(401, "Invalid credentials in Authorization header")
            return
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        try:
            self.server.hub._route(self, method, parts, query, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub


class FakeHub(FakeRepos):
    """The stand-in server. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    ``token`` is the only accepted token and ``namespace`` the user it belongs to.
    """

    def __init__(self, token: str = "hf_fake_" + uuid.uuid4().hex, namespace: str = "fake-user",
                 root: Path | None = None, scheduling_delay: float = 0.05) -> None:
        self.token, self.namespace = token, namespace
        self.owner = {"id": hashlib.sha1(namespace.encode()).hexdigest()[:24], "name": namespace,
                      "type": "user"}
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="fake-hub-")) if root is None else Path(root)
        self.scheduling_delay = scheduling_delay
        self.lock = threading.Lock()
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[dict[str, Any]] = []
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}
        self.forgotten: set[str] = set()
        self._server: _Server | None = None
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "call start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        bare_python_dir()  # made before any job, so its time never counts against one
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="fake-hub").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for job in list(self.jobs.values()):
            job.cancel()
        for job in list(self.jobs.values()):
            with job.cond:
                job.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no job is scheduling or running."""
        deadline = time.monotonic() + timeout
        while any(j.stage not in TERMINAL for j in self.jobs.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("fake hub jobs still running")
            time.sleep(0.05)

    # -- routing -----------------------------------------------------------------------------
    def _route(self, h: _Handler, method: str, p: list[str], query: list[tuple[str, str]],
               body: bytes) -> None:
        if p == ["api", "whoami-v2"] and method == "GET":
            return h._send(200, {"type": "user", "id": self.owner["id"], "name": self.namespace,
                                 "fullname": self.namespace, "orgs": [],
                                 "auth": {"type": "access_token",
                                          "accessToken": {"displayName": "fake", "role": "write"}}})
        if p[:2] == ["api", "jobs"]:
            return self._jobs(h, method, p[2:], query, body)
        if p[:2] == ["api", "repos"] and p[2:] == ["create"] and method == "POST":
            return self._create_repo(h, json.loads(body or b"{}"))
        if len(p) >= 6 and p[0] == "api" and p[1] in ("models", "datasets", "spaces"):
            repo = (p[1][:-1], f"{p[2]}/{p[3]}")
            if p[4] == "preupload" and method == "POST":
                files = json.loads(body)["files"]
                return h._send(200, {"files": [
                    {"path": f["path"], "shouldIgnore": False, "oid": None,
                     "uploadMode": "lfs" if f["size"] > 10 * 1024 * 1024 else "regular"}
                    for f in files]})
            if p[4] == "commit" and method == "POST":
                return self._commit(h, repo, body)
            if p[4] == "tree" and method == "GET":
                return self._tree(h, repo, p[5], "/".join(p[6:]), dict(query))
        if len(p) in (4, 6) and p[0] == "api" and p[1] in ("models", "datasets", "spaces") \
                and method == "GET" and (len(p) == 4 or p[4] == "revision"):
            return self._repo_info(h, (p[1][:-1], f"{p[2]}/{p[3]}"))
        if method in ("GET", "HEAD"):
            return self._resolve(h, method, p)
        return h._error(404, f"fake hub: no route for {method} /{'/'.join(p)}")

    def _jobs(self, h: _Handler, method: str, p: list[str], query: list[tuple[str, str]],
              body: bytes) -> None:
        if p == ["hardware"] and method == "GET":
            return h._send(200, hardware_json())
        if not p or p[0] != self.namespace:
            return h._error(403, f"you cannot run or read jobs in namespace {p[0] if p else ''!r}")
        if len(p) == 1 and method == "POST":
            spec = json.loads(body)
            problem = self._invalid_spec(spec)
            if problem is not None:
                return h._error(problem[0], problem[1])
            job = FakeJob(self, uuid.uuid4().hex[:24], spec)
            with self.lock:
                self.jobs[job.id] = job
            job.thread.start()
            return h._send(200, job.info())
        if len(p) == 1 and method == "GET":
            labels = [v.split("=", 1) for k, v in query if k == "label"]
            stages = {v for k, v in query if k == "stage"}
            found = [j.info() for j in list(self.jobs.values()) if j.id not in self.forgotten
                     and all((j.spec.get("labels") or {}).get(k) == v for k, v in labels)
                     and (not stages or j.stage in stages)]
            return h._send(200, found)
        job = self.jobs.get(p[1]) if len(p) >= 2 and p[1] not in self.forgotten else None
        if job is None:
            return h._error(404, f"Job {p[1] if len(p) > 1 else ''} not found")
        if len(p) == 2 and method == "GET":
            return h._send(200, job.info())
        if p[2:] == ["cancel"] and method == "POST":
            job.cancel()
            return h._send(200, {})
        if p[2:] == ["logs"] and method == "GET":
            return self._stream_logs(h, job)
        if p[2:] == ["metrics"] and method == "GET":
            return self._stream_metrics(h, job)
        return h._error(404, "fake hub: unknown job route")

    def _invalid_spec(self, spec: dict[str, Any]) -> tuple[int, str] | None:
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            return 400, f"unknown job spec keys: {sorted(unknown)}"
        if not spec.get("command") or not (spec.get("dockerImage") or spec.get("spaceId")):
            return 400, "a job needs a command and a dockerImage or spaceId"
        if spec.get("flavor") not in {hw["name"] for hw in HARDWARE}:
            return 400, f"unknown flavor {spec.get('flavor')!r}"
        for key, value in (spec.get("labels") or {}).items():
            if not _LABEL.match(key) or not _LABEL.match(str(value)):
                return 400, f"label {key}={value} is invalid: use letters, digits, - and _"
        for group in ("environment", "secrets"):
            if any(not isinstance(v, str) for v in (spec.get(group) or {}).values()):
                return 400, f"{group} values must be strings"
        for vol in spec.get("volumes") or []:
            if set(vol) - {"type", "source", "mountPath", "revision", "readOnly", "path"} or \
                    vol.get("type") not in _VOLUME_TYPES or not str(vol.get("mountPath", "")) \
                    .startswith("/") or "/" not in str(vol.get("source", "")):
                return 400, f"invalid volume {vol}"
            if vol["type"] != "bucket" and vol.get("readOnly") is False:
                return 400, "repo volumes are read-only"
            if vol["type"] != "bucket" and (vol["type"], vol["source"]) not in self.repos:
                return 404, f"volume source {vol['type']} {vol['source']} not found"
        return None

    def forget(self, job_id: str) -> None:
        """From now on the Hub answers 404 for this job (as for one it no longer knows)."""
        self.forgotten.add(job_id)

    def _stream_metrics(self, h: _Handler, job: FakeJob) -> None:
        """SSE ``event: metric`` samples while the job runs (the real stream has no history)."""
        if job.stage in TERMINAL:
            return h._error(406, "Job is not running")
        gpu = next(hw for hw in HARDWARE if hw["name"] == job.spec.get("flavor"))["accelerator"]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        n = 0
        while job.stage not in TERMINAL and not self._stopping.is_set() and n < 50:
            sample = {"cpu_usage_pct": 10, "cpu_millicores": 2000, "memory_used_bytes": 1 << 20,
                      "memory_total_bytes": 1 << 34, "rx_bps": 0, "tx_bps": 0,
                      "gpus": {} if gpu is None else {"882fa930": {
                          "utilization": 40 + n % 3 * 10, "memory_used_bytes": 1 << 30,
                          "memory_total_bytes": 1 << 34}}, "replica": "r1"}
            data = f"event: metric\ndata: {json.dumps(sample)}\n\n".encode()
            try:
                h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                h.wfile.flush()
            except OSError:
                return
            n += 1
            time.sleep(0.2)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def _stream_logs(self, h: _Handler, job: FakeJob) -> None:
        """SSE, chunked: replay every line from the start, then follow until the job ends."""
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        sent = 0
        while True:
            with job.cond:
                while (sent >= len(job.lines) and job.stage not in TERMINAL
                       and not self._stopping.is_set()):
                    job.cond.wait(0.5)
                batch = job.lines[sent:]
                done = job.stage in TERMINAL or self._stopping.is_set()
            for ts, text in batch:
                event = json.dumps({"timestamp": iso(ts), "data": text})
                chunk(f"data: {event}\n\n".encode())
            sent += len(batch)
            if done and sent >= len(job.lines):
                break
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    # -- helpers for tests -------------------------------------------------------------------
    def file(self, repo_type: str, repo_id: str, path: str) -> bytes | None:
        state = self.repos.get((repo_type, repo_id))
        return None if state is None else state["files"].get(path)

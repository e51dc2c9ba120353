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

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")

#: Illustrative prices (USD per minute, as the Hub lists them); not a price list to rely on.
HARDWARE: list[dict[str, Any]] = [
    {"name": "cpu-basic", "prettyName": "CPU Basic", "cpu": "2 vCPU", "ram": "16 GB",
     "unitCostUSD": 0.000167, "accelerator": None},
    {"name": "cpu-upgrade", "prettyName": "CPU Upgrade", "cpu": "8 vCPU", "ram": "32 GB",
     "unitCostUSD": 0.0005, "accelerator": None},
    {"name": "t4-small", "prettyName": "Nvidia T4 - small", "cpu": "4 vCPU", "ram": "15 GB",
     "unitCostUSD": 0.006667, "accelerator": ("T4", "1", "16 GB")},
    {"name": "a10g-small", "prettyName": "Nvidia A10G - small", "cpu": "4 vCPU", "ram": "15 GB",
     "unitCostUSD": 0.016667, "accelerator": ("A10G", "1", "24 GB")},
    {"name": "a100-large", "prettyName": "Nvidia A100 - large", "cpu": "12 vCPU", "ram": "142 GB",
     "unitCostUSD": 0.041667, "accelerator": ("A100", "1", "80 GB")},
    {"name": "h200", "prettyName": "Nvidia H200", "cpu": "23 vCPU", "ram": "256 GB",
     "unitCostUSD": 0.083333, "accelerator": ("H200", "1", "141 GB")},
    {"name": "h200x8", "prettyName": "8x Nvidia H200", "cpu": "184 vCPU", "ram": "2048 GB",
     "unitCostUSD": 0.666667, "accelerator": ("H200", "8", "1128 GB")},
]


_BARE: Path | None = None
_BARE_LOCK = threading.Lock()


def bare_python_dir() -> Path:
    """``bin`` of a virtual environment without site-packages: ``python`` there imports only the
    standard library and pip (no autolab, no huggingface_hub, no torch), as in a bare image.
    Made once per test session."""
    global _BARE
    with _BARE_LOCK:
        if _BARE is None:
            root = Path(tempfile.mkdtemp(prefix="fake-hub-python-"))
            subprocess.run([sys.executable, "-m", "venv", str(root / "venv")],  # pip: offline
                           check=True, capture_output=True)
            bindir = root / "venv" / "bin"
            if not (bindir / "python").exists():
                (bindir / "python").symlink_to(bindir / "python3")
            _BARE = bindir
        return _BARE


_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")
_SPEC_KEYS = {"command", "arguments", "environment", "secrets", "flavor", "timeoutSeconds",
              "labels", "volumes", "dockerImage", "spaceId", "attempts", "expose", "ssh",
              "network", "resourceGroupId"}
_VOLUME_TYPES = {"bucket", "model", "dataset", "space"}


def iso(ts: float | None) -> str | None:
    """The Hub's timestamp format, ``%Y-%m-%dT%H:%M:%S.%fZ``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hardware_json() -> list[dict[str, Any]]:
    out = []
    for hw in HARDWARE:
        acc = hw["accelerator"]
        out.append({
            "name": hw["name"], "prettyName": hw["prettyName"], "cpu": hw["cpu"],
            "ram": hw["ram"], "ephemeralStorage": "50 GB",
            "accelerator": None if acc is None else {
                "type": "gpu", "model": acc[0], "quantity": acc[1], "vram": acc[2],
                "manufacturer": "Nvidia"},
            "unitCostMicroUSD": round(hw["unitCostUSD"] * 1e6), "unitCostUSD": hw["unitCostUSD"],
            "unitLabel": "minute",
        })
    return out


class FakeJob:
    """One submitted job: what was received, its stage, its log lines and its process."""

    def __init__(self, hub: FakeHub, job_id: str, spec: dict[str, Any]) -> None:
        self.hub, self.id, self.spec = hub, job_id, spec
        self.stage, self.message = "SCHEDULING", None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = hub.root / "jobs" / job_id
        self.dir.mkdir(parents=True)
        self.cancelled = self.timed_out = False
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"fake-job-{job_id}")

    # -- running -----------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([str(bare_python_dir()), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(self.dir), "TMPDIR": str(self.dir), "LANG": "C.UTF-8",
            "HF_HUB_DISABLE_TELEMETRY": "1", "JOB_ID": self.id,
            # No package index: a job that tries to install from one fails.
            "PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        env.update({k: str(v) for k, v in (self.spec.get("environment") or {}).items()})
        env.update({k: str(v) for k, v in (self.spec.get("secrets") or {}).items()})
        return env

    def add_line(self, text: str) -> None:
        with self.cond:
            self.lines.append((time.time(), text))
            self.cond.notify_all()

    def _finish(self, stage: str, message: str | None) -> None:
        with self.cond:
            self.stage, self.message, self.finished_at = stage, message, time.time()
            self.cond.notify_all()

    def _run(self) -> None:
        time.sleep(self.hub.scheduling_delay)
        with self.cond:
            if self.cancelled:
                self.stage, self.finished_at = "CANCELED", time.time()
                self.cond.notify_all()
                return
            self.stage, self.started_at = "RUNNING", time.time()
        self.add_line(f"===== Job started at {iso(self.started_at)} =====")
        argv = list(self.spec.get("command") or []) + list(self.spec.get("arguments") or [])
        try:
            self.proc = subprocess.Popen(
                argv, cwd=self.dir, env=self._env(), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:
            self._finish("ERROR", f"Job failed to start: {exc}")
            return
        timer = None
        if self.spec.get("timeoutSeconds"):
            timer = threading.Timer(float(self.spec["timeoutSeconds"]), self._time_out)
            timer.daemon = True
            timer.start()
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.add_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        code = self.proc.wait()
        if timer is not None:
            timer.cancel()
        if self.cancelled:
            self._finish("CANCELED", None)
        elif self.timed_out:
            self._finish("ERROR", f"Job timed out after {self.spec['timeoutSeconds']} seconds.")
        elif code == 0:
            self._finish("COMPLETED", None)
        elif code == 137:
            self._finish("ERROR", "Job failed with exit code: 137. Reason: OOMKilled")
        else:
            self._finish("ERROR", f"Job failed with exit code: {code if code > 0 else 128 - code}.")

    def kill(self) -> None:
        """Stop the job's whole process group: TERM, then KILL after a short grace."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 0.5), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def cancel(self) -> None:
        with self.cond:
            if self.stage in TERMINAL:
                return
            self.cancelled = True
        self.kill()

    # -- what the API returns ----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        now = time.time()
        running = None
        if self.started_at is not None:
            running = int((self.finished_at or now) - self.started_at)
        owner = self.hub.owner
        return {
            "id": self.id, "createdAt": iso(self.created_at), "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at), "dockerImage": self.spec.get("dockerImage"),
            "spaceId": self.spec.get("spaceId"), "command": self.spec.get("command"),
            "arguments": self.spec.get("arguments", []),
            "environment": self.spec.get("environment", {}),
            # The Hub never returns secret values.
            "secrets": {k: None for k in (self.spec.get("secrets") or {})},
            "flavor": self.spec.get("flavor"), "labels": self.spec.get("labels"),
            "status": {"stage": self.stage, "message": self.message},
            "durations": {
                "schedulingSecs": int((self.started_at or now) - self.created_at),
                "runningSecs": running, "totalSecs": int((self.finished_at or now) - self.created_at),
            },
            "owner": owner, "initiator": {"type": "user", "id": owner["id"], "name": owner["name"]},
        }


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


class FakeHub:
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
            return h._send(200, _hardware_json())
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

    # -- repos -------------------------------------------------------------------------------
    def _create_repo(self, h: _Handler, payload: dict[str, Any]) -> None:
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

    def _commit(self, h: _Handler, repo: tuple[str, str], body: bytes) -> None:
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

    def _resolve(self, h: _Handler, method: str, p: list[str]) -> None:
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

    def _repo_info(self, h: _Handler, repo: tuple[str, str]) -> None:
        state = self.repos.get(repo)
        if state is None:
            return h._send(404, {"error": "Repository not found"},
                           headers={"X-Error-Code": "RepoNotFound"})
        return h._send(200, {"id": repo[1], "_id": hashlib.sha1(repo[1].encode()).hexdigest()[:24],
                             "private": state["private"], "sha": state["sha"], "disabled": False,
                             "gated": False, "siblings": [{"rfilename": k} for k in state["files"]]})

    def _tree(self, h: _Handler, repo: tuple[str, str], rev: str, path: str,
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

    # -- helpers for tests -------------------------------------------------------------------
    def file(self, repo_type: str, repo_id: str, path: str) -> bytes | None:
        state = self.repos.get((repo_type, repo_id))
        return None if state is None else state["files"].get(path)

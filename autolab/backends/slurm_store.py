"""The slurm backend's files on the shared filesystem: run directories, an index, a local queue.

Layout under the backend's folder (default ``<lab>/.autolab/plugins/slurm``)::

    runs/<experiment>/<token>/   one per submission: spec.json, handle.json, attempts.json,
                                 output.log, started.json, hardware.json, exit.json, final.json
    index/<job id>               the run directory of a handle id or SLURM job id
    queue/<order>-<token>.json   submissions waiting for room under max_queued (or a retry)
    submitit/                    submitit's pickles, sbatch scripts and the jobs' own logs
    .lock                        an flock serialising submissions between processes

Everything is plain JSON written atomically, so a restarted orchestrator (or a second one)
reads exactly what the first wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autolab.backends.slurm_job import write_json
from autolab_core.models import JobHandle, JobSpec, JobState, to_dict

LOCAL_PREFIX = "local-"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunDir:
    """One submission of one experiment: its spec, its SLURM attempts and what the job wrote.

    There is one instance per path in a process, which keeps what only the backend writes
    (spec, attempts, final state) in memory after the first read, so that polling a thousand
    jobs does not re-read their files. What the job writes (exit record, started, hardware) is
    read from disk each time it is asked for.
    """

    _instances: dict[str, RunDir] = {}
    path: Path
    _spec: JobSpec | None
    _attempts: list[dict[str, Any]] | None
    _final: tuple[JobState | None] | None
    _exists: bool

    def __new__(cls, path: Path | str) -> RunDir:
        key = str(Path(path))
        inst = cls._instances.get(key)
        if inst is None:
            inst = super().__new__(cls)
            inst.path = Path(path)
            inst._spec = None
            inst._attempts = None
            inst._final = None
            inst._exists = False
            cls._instances[key] = inst
        return inst

    def __init__(self, path: Path | str) -> None:  # state is set once, in __new__
        pass

    @classmethod
    def forget(cls, path: Path) -> None:
        """Drop the in-memory copy of a removed run directory."""
        cls._instances.pop(str(path), None)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def token(self) -> str:
        return self.path.name

    def _read(self, name: str) -> Any:
        return read_json(self.path / name)

    def exists(self) -> bool:
        if not self._exists:
            self._exists = (self.path / "spec.json").exists()
        return self._exists

    # -- written by the backend ------------------------------------------------------------
    @property
    def spec(self) -> JobSpec:
        if self._spec is None:
            self._spec = JobSpec.from_dict(self._read("spec.json")["spec"])
        return self._spec

    @property
    def name(self) -> str:
        return str(self._read("spec.json")["name"])

    def attempts(self) -> list[dict[str, Any]]:
        if not self._attempts:  # an empty list is read again: another process may submit it
            self._attempts = list(self._read("attempts.json") or [])
        return [dict(a) for a in self._attempts]

    def _write_attempts(self, attempts: list[dict[str, Any]]) -> None:
        write_json(self.path / "attempts.json", attempts)
        self._attempts = attempts

    def add_attempt(self, job_id: str) -> None:
        attempts = list(self._read("attempts.json") or [])  # fresh: the lock holder writes
        attempts.append({"job_id": job_id, "at": time.time(), "restarts": 0})
        self._write_attempts(attempts)

    def set_restarts(self, job_id: str, restarts: int) -> None:
        attempts = list(self._read("attempts.json") or [])
        for attempt in attempts:
            if attempt["job_id"] == job_id:
                attempt["restarts"] = restarts
        self._write_attempts(attempts)

    def handle_id(self) -> str:
        data = self._read("handle.json")
        if data:
            return str(data["job_id"])
        attempts = self.attempts()
        return attempts[0]["job_id"] if attempts else LOCAL_PREFIX + self.token

    def set_handle_id(self, job_id: str) -> None:
        write_json(self.path / "handle.json", {"job_id": job_id})

    def handle(self, backend: str) -> JobHandle:
        data = self._read("spec.json")
        return JobHandle(
            backend=backend,
            job_id=self.handle_id(),
            experiment_id=self.spec.experiment_id,
            submitted_at=float(data.get("created", time.time())),
            data={"run_dir": str(self.path), "name": data["name"]},
        )

    def final(self) -> JobState | None:
        if self._final is None or (self._final[0] is None and not self._attempts):
            data = self._read("final.json")
            self._final = (None if data is None else JobState.from_dict(data),)
        return self._final[0]

    def set_final(self, state: JobState) -> None:
        write_json(self.path / "final.json", to_dict(state))
        self._final = (state,)

    def submitting(self) -> dict[str, Any] | None:
        data = self._read("submitting.json")
        return data if isinstance(data, dict) else None

    def set_submitting(self, name: str, index: int | None) -> None:
        write_json(self.path / "submitting.json", {"name": name, "index": index, "at": time.time()})

    def clear_submitting(self) -> None:
        (self.path / "submitting.json").unlink(missing_ok=True)

    @property
    def cancelled(self) -> bool:
        return (self.path / "cancelled").exists()

    def mark_cancelled(self) -> None:
        (self.path / "cancelled").write_text(str(time.time()))

    # -- written by the job ------------------------------------------------------------------
    def started(self) -> dict[str, Any] | None:
        return self._read("started.json")

    def exit_record(self) -> dict[str, Any] | None:
        return self._read("exit.json")

    def hardware(self) -> dict[str, str]:
        data = self._read("hardware.json")
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    @property
    def log_path(self) -> Path:
        return self.path / "output.log"

    def last_log_line(self, limit: int = 300) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        return lines[-1][:limit] if lines else ""


class Store:
    """The backend's folder: creates run directories, indexes job ids, keeps the local queue."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("runs", "index", "queue", "submitit"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def submitit_dir(self) -> Path:
        return self.root / "submitit"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes (and backend instances) for submissions and retries."""
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def new_run(self, spec: JobSpec, name: str) -> RunDir:
        token = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        path = self.root / "runs" / _safe(spec.experiment_id) / token
        path.mkdir(parents=True)
        write_json(path / "spec.json", {"spec": to_dict(spec), "name": name, "created": time.time()})
        return RunDir(path)

    def runs_for(self, experiment_id: str) -> list[RunDir]:
        """Run directories of ``experiment_id``, oldest first."""
        base = self.root / "runs" / _safe(experiment_id)
        if not base.is_dir():
            return []
        runs = [RunDir(p) for p in sorted(base.iterdir()) if (p / "spec.json").exists()]
        return [r for r in runs if r.spec.experiment_id == experiment_id]

    # -- index -----------------------------------------------------------------------------
    def index(self, job_id: str, run: RunDir) -> None:
        (self.root / "index" / _safe(job_id)).write_text(str(run.path))

    def lookup(self, job_id: str) -> RunDir | None:
        try:
            path = (self.root / "index" / _safe(job_id)).read_text().strip()
        except OSError:
            return None
        run = RunDir(path)
        return run if run.exists() else None

    # -- local queue -------------------------------------------------------------------------
    def enqueue(self, run: RunDir, front: bool = False) -> None:
        order = "0" if front else "1"
        entry = self.root / "queue" / f"{order}-{time.time_ns():020d}-{run.token}.json"
        write_json(entry, {"run_dir": str(run.path)})

    def queued(self) -> list[tuple[Path, RunDir]]:
        """Waiting submissions, retries first, then in submission order."""
        out = []
        for entry in sorted((self.root / "queue").glob("*.json")):
            data = read_json(entry)
            if data and "run_dir" in data:
                out.append((entry, RunDir(data["run_dir"])))
        return out

    def has_queue(self) -> bool:
        return any((self.root / "queue").glob("*.json"))

    def is_queued(self, run: RunDir) -> bool:
        return any((self.root / "queue").glob(f"*-{run.token}.json"))

    def dequeue(self, run: RunDir) -> bool:
        """Remove ``run``'s queue entries; True when there were any."""
        found = False
        for entry in (self.root / "queue").glob(f"*-{run.token}.json"):
            entry.unlink(missing_ok=True)
            found = True
        return found

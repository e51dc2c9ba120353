"""The job half of :mod:`hf_fake_hub`: hardware, the bare interpreter, one running job.

See :mod:`hf_fake_hub` for what is faithful to the Hub and what is a stand-in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hf_fake_hub import FakeHub

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


def iso(ts: float | None) -> str | None:
    """The Hub's timestamp format, ``%Y-%m-%dT%H:%M:%S.%fZ``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hardware_json() -> list[dict[str, Any]]:
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



"""The ``hf-jobs`` backend against a local stand-in for the Hugging Face Hub.

The Hub cannot be reached from tests, so :mod:`tests.hf_fake_hub` serves the same wire protocol
as the Hub (huggingface_hub 2.x's requests: jobs, SSE logs, hardware, whoami, repo create,
preupload/commit, resolve) on 127.0.0.1 and really runs every job's command in a subprocess.
The backend talks to it through the real ``huggingface_hub`` client; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from autolab.backends.hf_jobs import EXPERIMENT_LABEL, LAB_LABEL, HfJobsBackend
from autolab.backends.hf_state import classify
from autolab_core.errors import BackendError, ConfigError
from autolab_core.lab import Lab
from autolab_core.metriclines import parse_metric_line
from autolab_core.models import ExperimentStatus, JobSpec, JobStatus
from autolab_core.testing import JobBackendContract, make_context, read_all_logs, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_fake_hub import FakeHub
from toylab import CONFIG, PREPARE, TRAIN


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with FakeHub(root=tmp_path / "hub") as server:
        monkeypatch.setenv("HF_TOKEN", server.token)
        yield server


def make(hub: FakeHub, tmp_path: Path, lab: str = "lab", **options: Any) -> HfJobsBackend:
    opts = {"endpoint": hub.url, "namespace": hub.namespace, "setup": [], "setup_timeout": 60,
            **options}
    return HfJobsBackend(opts, make_context(tmp_path, lab))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repo whose commit ``wanted`` prints metric lines; HEAD then moves past it."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "train.py").write_text(
        "import os\n"
        "for step in range(3):\n"
        "    print('AUTOLAB_METRIC {\"step\": %d, \"loss\": %.1f}' % (step, 3 - step), flush=True)\n"
        "print('version', open('VERSION').read().strip())\n"
        "print('token-visible', 'HF_TOKEN' in os.environ)\n"
        "print('nonce-visible', os.environ.get('AUTOLAB_RESULT_NONCE'))\n"
    )
    (repo / "VERSION").write_text("wanted\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "wanted")
    wanted = git(repo, "rev-parse", "HEAD")
    (repo / "VERSION").write_text("later\n")
    git(repo, "commit", "-q", "-am", "later")
    return repo, wanted


class TestHfJobsContract(JobBackendContract):
    """The shared backend contract, run through huggingface_hub against the fake Hub."""

    timeout = 30.0
    shares_workdir = False  # the job runs in the container's own checkout of spec.commit

    @pytest.fixture(autouse=True)
    def _hub(self, hub: FakeHub) -> None:
        self.hub = hub

    def make_backend(self, tmp_path: Path) -> HfJobsBackend:
        return make(self.hub, tmp_path)


def test_job_with_code_completes_with_metrics_cost_and_no_token_leak(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo, wanted = make_repo(tmp_path)
    backend = make(hub, tmp_path, flavor="a10g-small")
    spec = JobSpec(
        experiment_id="exp-1", command=(sys.executable, "train.py"), workdir=str(repo),
        env={"AUTOLAB_SEED": "3", "AUTOLAB_RESULT_NONCE": "n0nce"}, time_limit_s=60,
        commit=wanted,
    )
    handle = backend.submit(spec)
    state = wait_for(backend, handle, timeout=30)
    assert state.status is JobStatus.SUCCEEDED, (state, read_all_logs(backend, handle))
    text = read_all_logs(backend, handle)
    assert f"[autolab] checked out {wanted}" in text
    assert "version wanted" in text  # the exact commit, not the checkout's HEAD
    assert "token-visible False" in text  # HF_TOKEN is dropped before lab code runs
    assert "nonce-visible n0nce" in text  # secrets do reach the job's environment
    metrics = [m for m in map(parse_metric_line, text.splitlines()) if m]
    assert metrics == [(0, {"loss": 3.0}), (1, {"loss": 2.0}), (2, {"loss": 1.0})]
    assert "===== Job started" not in text
    assert state.hardware["flavor"] == "a10g-small"
    assert state.cost_usd is not None and 0 <= state.cost_usd < 0.1
    # The code went to a private dataset repo of the lab.
    repo_id = f"{hub.namespace}/autolab-lab-code"
    assert hub.repos[("dataset", repo_id)]["private"] is True
    assert hub.file("dataset", repo_id, "experiments/exp-1.tar.gz")
    # What the Hub received: the token only as a secret, never in command, env or labels.
    job = hub.jobs[handle.job_id]
    assert job.spec["secrets"]["HF_TOKEN"] == hub.token
    assert job.spec["secrets"]["AUTOLAB_RESULT_NONCE"] == "n0nce"
    visible = json.dumps([job.spec["command"], job.spec["environment"], job.spec["labels"],
                          job.spec["dockerImage"]])
    assert hub.token not in visible and "n0nce" not in visible
    assert hub.token not in text
    assert job.spec["labels"][LAB_LABEL] == "lab"
    assert job.spec["labels"][EXPERIMENT_LABEL] == "exp-1"
    assert job.spec["timeoutSeconds"] == 120  # 60 s to run + 60 s setup
    assert job.spec["environment"]["AUTOLAB_SEED"] == "3"
    backend.close()


def test_named_secrets_travel_as_secrets_only(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make(hub, tmp_path, secrets=["MY_API_KEY"], env={"PLAIN": "p"})
    code = "import os; print('key', os.environ['MY_API_KEY'], os.environ['PLAIN'])"
    spec = JobSpec("s-1", (sys.executable, "-c", code), str(tmp_path))
    with pytest.raises(BackendError, match="export MY_API_KEY"):
        backend.submit(spec)
    assert hub.jobs == {}
    monkeypatch.setenv("MY_API_KEY", "k-123")
    handle = backend.submit(spec)
    assert wait_for(backend, handle, timeout=30).status is JobStatus.SUCCEEDED
    assert "key k-123 p" in read_all_logs(backend, handle)
    job = hub.jobs[handle.job_id]
    assert job.spec["secrets"]["MY_API_KEY"] == "k-123"
    assert job.spec["environment"]["PLAIN"] == "p" and "MY_API_KEY" not in job.spec["environment"]


def test_oom_error_is_classified(hub: FakeHub, tmp_path: Path) -> None:
    backend = make(hub, tmp_path)
    spec = JobSpec("oom-1", (sys.executable, "-c", "import sys; print('big'); sys.exit(137)"),
                   str(tmp_path))
    handle = backend.submit(spec)
    state = wait_for(backend, handle, timeout=30)
    assert state.status is JobStatus.OOM, state
    assert state.reason and "OOMKilled" in state.reason and state.exit_code == 137
    assert "big" in read_all_logs(backend, handle)


def test_hub_timeout_is_classified(hub: FakeHub, tmp_path: Path) -> None:
    """The Hub-side limit (run limit + setup allowance) ends a job that ignores TERM."""
    backend = make(hub, tmp_path, setup_timeout=1)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    handle = backend.submit(JobSpec("slow", (sys.executable, "-c", code), str(tmp_path),
                                    time_limit_s=1))
    state = wait_for(backend, handle, timeout=30)
    assert state.status is JobStatus.TIMEOUT, state


def test_cancel_all_stops_only_this_labs_jobs(hub: FakeHub, tmp_path: Path) -> None:
    mine, other = make(hub, tmp_path / "a", lab="mine"), make(hub, tmp_path / "b", lab="other")
    sleep = (sys.executable, "-c", "import time; time.sleep(60)")
    handles = [mine.submit(JobSpec(f"s{i}", sleep, str(tmp_path))) for i in range(2)]
    theirs = other.submit(JobSpec("s9", sleep, str(tmp_path)))
    assert sorted(mine.cancel_all()) == sorted(h.job_id for h in handles)
    for handle in handles:
        assert wait_for(mine, handle, timeout=30).status is JobStatus.CANCELLED
    assert other.poll([theirs])[theirs.job_id].status in (JobStatus.PENDING, JobStatus.RUNNING)
    other.cancel(theirs)
    assert wait_for(other, theirs, timeout=30).status is JobStatus.CANCELLED


def test_restart_finds_and_reattaches_by_label(hub: FakeHub, tmp_path: Path) -> None:
    first = make(hub, tmp_path)
    code = "import time; print('started', flush=True); time.sleep(1); print('finished')"
    handle = first.submit(JobSpec("exp/7 α", (sys.executable, "-c", code), str(tmp_path),
                                  time_limit_s=30))
    first.close()
    again = make(hub, tmp_path)  # a new process after a crash: nothing in memory
    found = again.find("exp/7 α")
    assert found is not None and found.job_id == handle.job_id
    assert found.experiment_id == "exp/7 α" and found.data["time_limit_s"] == 30
    assert again.find("exp-8") is None
    assert make(hub, tmp_path, lab="another-lab").find("exp/7 α") is None
    reattached = again.reattach(handle.job_id)
    assert reattached is not None and reattached.experiment_id == "exp/7 α"
    assert wait_for(again, reattached, timeout=30).status is JobStatus.SUCCEEDED
    assert read_all_logs(again, reattached).splitlines() == ["started", "finished"]
    submits = [r for r in hub.requests if r["method"] == "POST" and r["path"].count("/") == 3
               and r["path"].startswith("/api/jobs/")]
    assert len(submits) == 1  # nothing was submitted twice


def test_logs_of_running_job_do_not_block(hub: FakeHub, tmp_path: Path) -> None:
    backend = make(hub, tmp_path)
    code = "import time\nfor i in range(4):\n    print('tick', i, flush=True); time.sleep(0.4)"
    handle = backend.submit(JobSpec("ticks", (sys.executable, "-c", code), str(tmp_path)))
    seen, cursor, slowest = "", 0, 0.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        start = time.monotonic()
        chunk = backend.logs(handle, cursor)
        slowest = max(slowest, time.monotonic() - start)
        seen, cursor = seen + chunk.text, chunk.cursor
        if backend.poll([handle])[handle.job_id].status.terminal and "tick 3" in seen:
            break
        time.sleep(0.1)
    seen += backend.logs(handle, cursor).text
    assert [ln for ln in seen.splitlines()] == [f"tick {i}" for i in range(4)]
    assert slowest < 0.5, f"logs() blocked for {slowest:.2f}s on a running job"


def test_budget_estimate_and_too_expensive_flavor(hub: FakeHub, tmp_path: Path) -> None:
    spec = JobSpec("b", ("python", "train.py"), str(tmp_path), time_limit_s=3600)
    cheap = make(hub, tmp_path, flavor="a10g-small", setup_timeout="15m")
    # a10g-small costs $0.016667/minute = $1.00/h; 1 h run + 15 min setup allowance.
    assert cheap.estimate_cost(spec) == pytest.approx(1.25, rel=1e-3)
    assert cheap.estimate_cost(spec) == pytest.approx(1.25, rel=1e-3)
    hardware_reads = [r for r in hub.requests if r["path"] == "/api/jobs/hardware"]
    assert len(hardware_reads) == 1  # the price list is cached
    budget_left = 20.0
    big = make(hub, tmp_path, flavor="h200x8", setup_timeout="15m")
    assert big.estimate_cost(spec) == pytest.approx(50.0, rel=1e-3)
    assert big.estimate_cost(spec) > budget_left  # the orchestrator would refuse this job
    with pytest.raises(BackendError, match="a10g-small"):
        make(hub, tmp_path, flavor="z100-huge").estimate_cost(spec)
    with pytest.raises(BackendError, match="time limit"):
        make(hub, tmp_path, timeout=None).estimate_cost(
            JobSpec("b", ("python",), str(tmp_path)))


def test_check_names_the_fix(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert HfJobsBackend.available() is None
    assert make(hub, tmp_path).check() is None
    assert "z100" in (make(hub, tmp_path, flavor="z100").check() or "")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert "hf auth login" in (make(hub, tmp_path).check() or "")
    with pytest.raises(BackendError, match="401"):
        make(hub, tmp_path).submit(JobSpec("x", ("true",), str(tmp_path)))
    monkeypatch.delenv("HF_TOKEN")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "none"))
    assert "hf auth login" in (make(hub, tmp_path).check() or "")
    with pytest.raises(ConfigError, match="valid keys"):
        make(hub, tmp_path, gpu="a100")


@pytest.mark.parametrize(
    ("stage", "message", "running", "expected"),
    [
        ("SCHEDULING", None, None, JobStatus.PENDING),
        ("RUNNING", None, 3, JobStatus.RUNNING),
        ("COMPLETED", None, 3, JobStatus.SUCCEEDED),
        ("CANCELED", None, 3, JobStatus.CANCELLED),
        ("DELETED", None, None, JobStatus.CANCELLED),
        ("ERROR", "Job failed with exit code: 137. Reason: OOMKilled", 3, JobStatus.OOM),
        ("ERROR", "Job failed with exit code: 124.", 10, JobStatus.TIMEOUT),
        ("ERROR", "Job failed with exit code: 137.", 10, JobStatus.TIMEOUT),
        ("ERROR", "Job failed with exit code: 137.", 2, JobStatus.FAILED),
        ("ERROR", "Job timed out after 90 seconds.", 90, JobStatus.TIMEOUT),
        ("ERROR", "Job failed with exit code: 1.", 3, JobStatus.FAILED),
        ("ERROR", None, 3, JobStatus.FAILED),
    ],
)
def test_stage_mapping(stage: str, message: str | None, running: float | None,
                       expected: JobStatus) -> None:
    status, reason, _ = classify(stage, message, running, time_limit_s=10)
    assert status is expected
    assert (reason is not None) == (expected not in (
        JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED))


def test_plugin_is_registered_and_import_is_light(tmp_path: Path) -> None:
    """Through the installed entry point, and without importing huggingface_hub.

    Runs in ``tmp_path`` so that a stale ``autolab.egg-info`` in the source tree (which
    ``python -m pytest`` puts on ``sys.path``) cannot shadow the installed metadata.
    """
    code = (
        "import sys\n"
        "from autolab.backends.hf_jobs import HfJobsBackend\n"
        "assert 'huggingface_hub' not in sys.modules, 'heavy import at module level'\n"
        "from autolab_core.plugins import PluginManager\n"
        "assert PluginManager().get('backend', 'hf-jobs') is HfJobsBackend\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def make_hf_toy_lab(root: Path, hub: FakeHub, flavor: str, usd: float) -> Path:
    """The toy lab of ``tests/toylab.py``, configured for backend hf-jobs on the fake Hub."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text(PREPARE.format(noise=0.01, flat=False))
    local = '[backend]\nname = "local"\n'
    assert local in CONFIG
    config = CONFIG.replace(local, (
        f'[backend]\nname = "hf-jobs"\n\n[backend.hf-jobs]\nendpoint = "{hub.url}"\n'
        f'flavor = "{flavor}"\nsetup_timeout = "1m"\n'
    )).replace("noise_runs = 3", "noise_runs = 2").replace("confirm_runs = 2", "confirm_runs = 1")
    Lab.init(root, config_text=config + f"\n[budget]\nusd = {usd}\n")
    return root


def autolab_run(root: Path, hub: FakeHub) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run(
        [sys.executable, "-m", "autolab", "run", "--lab", str(root), "-n", "1", "-w", "2"],
        env=env, capture_output=True, text=True, timeout=120, cwd=root,
    )


def test_autolab_run_end_to_end_on_hf_jobs(hub: FakeHub, tmp_path: Path) -> None:
    """The real CLI, in a subprocess: baselines and one candidate run as HF jobs and are scored."""
    root = make_hf_toy_lab(tmp_path / "lab", hub, flavor="a10g-small", usd=5.0)
    proc = autolab_run(root, hub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    finished = [e for e in Lab(root).load_experiments() if e.status is ExperimentStatus.FINISHED]
    assert {e.role for e in finished} >= {"baseline", "candidate"}, proc.stdout
    for exp in finished:
        assert exp.result is not None and exp.result.trusted
        assert exp.handle is not None and exp.handle.backend == "hf-jobs"
        job = hub.jobs[exp.handle.job_id]
        assert job.stage == "COMPLETED"
        assert job.spec["labels"][EXPERIMENT_LABEL] == exp.id
        assert job.spec["flavor"] == "a10g-small"
        assert hub.token not in json.dumps([job.spec["command"], job.spec["environment"]])
        assert exp.hardware.get("flavor") == "a10g-small"
        script = job.spec["command"][2]  # nothing of autolab comes from a package index
        assert "autolab[" not in script and "huggingface_hub" not in script
        assert ".autolab-runtime" in script
        assert exp.hardware["artifacts"].endswith(f"/artifacts/{exp.id}")
        code_repo = f"{hub.namespace}/autolab-toy-code"
        assert hub.file("dataset", code_repo, f"artifacts/{exp.id}/result.json") is not None
    assert Lab(root).scores()


def test_autolab_run_refuses_jobs_over_the_money_budget(hub: FakeHub, tmp_path: Path) -> None:
    """h200x8 for 2 min + 1 min setup is ~$2; with $1 of budget nothing may reach the Hub."""
    root = make_hf_toy_lab(tmp_path / "lab", hub, flavor="h200x8", usd=1.0)
    proc = autolab_run(root, hub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert hub.jobs == {}
    experiments = Lab(root).load_experiments()
    # the first refusal (nothing in flight could free money) stops the run; the other
    # experiments stay queued for a session with more budget instead of being thrown away
    rejected = [e for e in experiments if e.status is ExperimentStatus.REJECTED]
    assert len(rejected) == 1 and "over budget" in (rejected[0].reason or "")
    assert all(e.status is ExperimentStatus.QUEUED for e in experiments if e not in rejected)
    assert "stopping:" in proc.stdout and "over budget" in proc.stdout.split("stopping:")[-1]

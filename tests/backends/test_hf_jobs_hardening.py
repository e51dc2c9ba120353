"""HF Jobs hardened for real accounts, against the strict local stand-in of the Hub.

:mod:`hf_fake_hub` is written from ``huggingface_hub``'s client code (not from our backend) and
runs every job in a virtual environment without site-packages, with no package index: a job
that needed autolab or anything from PyPI would fail there. Distribution metadata scenarios
(an old ``huggingface_hub``, the unrelated ``autolab`` from PyPI) are real ``.dist-info``
folders put first on ``sys.path`` of a subprocess.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hf_fake_hub import FakeHub, bare_python_dir

from autolab.backends import hf_code
from autolab.backends.hf_jobs import HfJobsBackend
from autolab.backends.hf_options import parse_version, parse_volume
from autolab.backends.hf_state import billed_usd
from autolab.commands.distribution import unrelated_autolab
from autolab_core.errors import BackendError, ConfigError
from autolab_core.models import JobSpec, JobStatus
from autolab_core.testing import make_context, read_all_logs, wait_for

WORKTREE = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with FakeHub(root=tmp_path / "hub") as server:
        monkeypatch.setenv("HF_TOKEN", server.token)
        yield server


def make(hub: FakeHub, tmp_path: Path, lab: str = "lab", **options: Any) -> HfJobsBackend:
    opts = {"endpoint": hub.url, "namespace": hub.namespace, "setup_timeout": 60, **options}
    return HfJobsBackend(opts, make_context(tmp_path, lab))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(tmp_path: Path, files: dict[str, str]) -> tuple[Path, str]:
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "code")
    return repo, git(repo, "rev-parse", "HEAD")


def dist_info(root: Path, name: str, version: str, entry_points: str = "") -> Path:
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)
    return root


def run_python(code: str, first_on_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{first_on_path}{os.pathsep}{WORKTREE}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=first_on_path)


# -- the package and its dependency ----------------------------------------------------------
def test_old_huggingface_hub_is_refused_by_name(tmp_path: Path) -> None:
    dist_info(tmp_path, "huggingface_hub", "1.20.0")
    proc = run_python("from autolab.backends.hf_jobs import HfJobsBackend as B\n"
                      "print(B.available())", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "huggingface_hub 1.20.0 is too old" in proc.stdout and ">= 1.24.0" in proc.stdout
    assert "pip install -U 'autolab-ml[hf]'" in proc.stdout
    assert HfJobsBackend.available() is None  # the installed one is new enough
    assert parse_version("1.24.0rc1") == (1, 24, 0) and parse_version("2.4.0") > (1, 24, 0)


def test_the_unrelated_autolab_distribution_is_detected(tmp_path: Path) -> None:
    unrelated = dist_info(tmp_path / "a", "autolab", "2.0.3")
    ours_old_name = dist_info(tmp_path / "b", "autolab", "0.1.0",
                              "[autolab]\nlocal = autolab.backends.local\n")
    assert unrelated_autolab(importlib.metadata.distributions(path=[str(unrelated)])) == \
        "autolab 2.0.3"
    assert unrelated_autolab(importlib.metadata.distributions(path=[str(ours_old_name)])) is None
    assert unrelated_autolab() is None  # this environment: only ours
    proc = run_python("from autolab.commands.distribution import ensure_no_unrelated_autolab\n"
                      "ensure_no_unrelated_autolab()", unrelated)
    assert proc.returncode != 0 and "pip uninstall autolab" in proc.stderr, proc.stderr
    proc = run_python("from autolab.backends.hf_jobs import HfJobsBackend as B\n"
                      "print(B.available())", unrelated)
    assert "pip uninstall autolab" in proc.stdout, proc.stdout + proc.stderr


def test_wheel_metadata_is_autolab_ml(tmp_path: Path) -> None:
    """``pip wheel --no-deps`` of this checkout (no install): name, extras, console script."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), str(WORKTREE)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("autolab_ml-*.whl"))
    dist = importlib.metadata.distributions(path=[str(wheel)])
    meta = next(d for d in dist if d.metadata["Name"] == "autolab-ml").metadata
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("huggingface_hub>=1.24.0") or r.startswith("huggingface-hub>=1.24.0")
               for r in requires), requires
    assert {"slurm", "hf", "all"} <= set(meta.get_all("Provides-Extra") or [])


# -- jobs that bring their own runtime -------------------------------------------------------
def test_the_job_environment_has_no_autolab_and_no_index(hub: FakeHub, tmp_path: Path) -> None:
    backend = make(hub, tmp_path)
    code = ("import subprocess, sys\ntry:\n    import autolab\n    print('autolab-importable')\n"
            "except ImportError:\n    print('no-autolab')\n")
    handle = backend.submit(JobSpec("bare", ("python", "-c", code), str(tmp_path)))
    assert wait_for(backend, handle, timeout=30).status is JobStatus.SUCCEEDED
    assert "no-autolab" in read_all_logs(backend, handle)
    pip = backend.submit(JobSpec("pip", ("python", "-m", "pip", "install", "attrs"),
                                 str(tmp_path), time_limit_s=120))
    assert wait_for(backend, pip, timeout=120).status is JobStatus.FAILED  # no package index
    assert (bare_python_dir() / "python").exists()


def tiny_wheel(dest: Path, name: str) -> Path:
    """A real, minimal wheel of a one-module package (installable with no index)."""
    import zipfile

    path = dest / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}.py": f"WHO = {name!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as whl:
        for key, text in files.items():
            whl.writestr(key, text)
    return path


def test_the_labs_declared_requirements_are_installed(hub: FakeHub, tmp_path: Path) -> None:
    """requirements.txt, PEP 723 inline metadata, the option and ``[run] requirements`` (the
    spec's), each a local wheel."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    a, b, c, d = (tiny_wheel(wheels, n) for n in ("pkg_txt", "pkg_inline", "pkg_opt", "pkg_run"))
    train = ("# /// script\n# dependencies = [\n"
             f"#   'pkg_inline @ {b.as_uri()}',\n# ]\n# ///\n"
             "import pkg_inline, pkg_opt, pkg_run, pkg_txt\n"
             "print('have', pkg_txt.WHO, pkg_inline.WHO, pkg_opt.WHO, pkg_run.WHO)\n")
    repo, commit = make_repo(tmp_path, {"train.py": train, "requirements.txt": f"{a}\n"})
    backend = make(hub, tmp_path, requirements=[str(c)])
    handle = backend.submit(JobSpec("deps", ("python", "train.py"), str(repo), commit=commit,
                                    time_limit_s=120, requirements=(str(d),)))
    state = wait_for(backend, handle, timeout=180)
    text = read_all_logs(backend, handle)
    assert state.status is JobStatus.SUCCEEDED, text
    assert "have pkg_txt pkg_inline pkg_opt pkg_run" in text


def test_archive_holds_the_tree_and_the_runtime_but_no_history(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path, {"train.py": "print('hi')\n", "leak.txt": "s3cr3t-value\n"})
    git(repo, "rm", "-q", "leak.txt")
    git(repo, "commit", "-q", "-m", "remove the leak")
    head = git(repo, "rev-parse", "HEAD")
    archive = hf_code.make_archive(str(repo), head, tmp_path / "code.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        blobs = b"".join(tar.extractfile(m).read() for m in tar if m.isfile())  # type: ignore
    assert "train.py" in names and "leak.txt" not in names
    assert not any(n == ".git" or n.startswith(".git/") for n in names)
    assert b"s3cr3t-value" not in blobs and b"s3cr3t-value" not in archive.read_bytes()
    assert f"{hf_code.RUNTIME_DIR}/autolab_core/runner.py" in names
    assert f"{hf_code.RUNTIME_DIR}/autolab_core/__init__.py" in names


def test_lost_after_a_confirmed_404(hub: FakeHub, tmp_path: Path) -> None:
    backend = make(hub, tmp_path)
    handle = backend.submit(JobSpec("gone", ("python", "-c", "print(1)"), str(tmp_path)))
    assert wait_for(backend, handle, timeout=30).status is JobStatus.SUCCEEDED
    hub.forget(handle.job_id)
    first = backend.poll([handle])[handle.job_id]
    assert first.status is JobStatus.UNKNOWN and not first.status.terminal
    second = backend.poll([handle])[handle.job_id]
    assert second.status is JobStatus.LOST and second.status.terminal
    assert second.reason and "gone from HF Jobs" in second.reason
    assert backend.logs(handle, 0).text == ""
    assert not any(r["path"].endswith("/metrics") for r in hub.requests)  # CPU: no GPU samples


# -- secrets ---------------------------------------------------------------------------------
def test_a_job_that_prints_secrets_is_scrubbed(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_KEY", "key-0123456789")
    backend = make(hub, tmp_path, secrets=["HF_TOKEN", "MY_API_KEY"])
    code = ("import os, sys; print('token', os.environ['HF_TOKEN']); "
            "print('key', os.environ['MY_API_KEY']); sys.exit(1)")
    handle = backend.submit(JobSpec("leaky", ("python", "-c", code), str(tmp_path)))
    state = wait_for(backend, handle, timeout=30)
    text = read_all_logs(backend, handle)
    assert state.status is JobStatus.FAILED
    assert "token ***" in text and "key ***" in text, text
    assert hub.token not in text and "key-0123456789" not in text
    assert hub.token not in (state.reason or "")
    assert hub.token in "".join(line for _, line in hub.jobs[handle.job_id].lines)  # it did print


# -- the code repo ---------------------------------------------------------------------------
def test_a_public_code_repo_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=hub.token).create_repo(
        f"{hub.namespace}/open-code", repo_type="dataset", private=False)
    repo, commit = make_repo(tmp_path, {"train.py": "print(1)\n"})
    backend = make(hub, tmp_path, code_repo=f"{hub.namespace}/open-code")
    assert "PUBLIC" in (backend.check() or "")  # `autolab run` stops before any experiment
    assert make(hub, tmp_path).check() is None  # a code repo that does not exist yet is fine
    with pytest.raises(BackendError, match="PUBLIC"):
        backend.submit(JobSpec("p", ("python", "train.py"), str(repo), commit=commit))
    assert hub.jobs == {}
    assert hub.file("dataset", f"{hub.namespace}/open-code", hf_code.code_path("p")) is None


def test_artifacts_come_back_and_old_code_is_deleted(hub: FakeHub, tmp_path: Path) -> None:
    train = ("import os, pathlib\nout = pathlib.Path(os.environ.get('AUTOLAB_OUTPUT_DIR', "
             "'.autolab-out'))\nout.mkdir(parents=True, exist_ok=True)\n"
             "(out / 'model.json').write_text('{\"w\": 1}')\nprint('trained')\n")
    repo, commit = make_repo(tmp_path, {"train.py": train})
    backend = make(hub, tmp_path)
    handle = backend.submit(JobSpec("exp-a", ("python", "train.py"), str(repo), commit=commit,
                                    time_limit_s=60))
    state = wait_for(backend, handle, timeout=60)
    assert state.status is JobStatus.SUCCEEDED, read_all_logs(backend, handle)
    code_repo = f"{hub.namespace}/autolab-lab-code"
    assert hub.file("dataset", code_repo, "artifacts/exp-a/model.json") == b'{"w": 1}'
    assert state.hardware["artifacts"].endswith("/tree/main/artifacts/exp-a")
    assert "AUTOLAB_ARTIFACTS" in read_all_logs(backend, handle)
    assert hub.file("dataset", code_repo, "experiments/exp-a.tar.gz") is not None
    assert backend.clean_code(3600) == []  # kept while younger than the retention
    assert backend.clean_code(0) == ["experiments/exp-a.tar.gz"]
    assert hub.file("dataset", code_repo, "experiments/exp-a.tar.gz") is None
    assert hub.file("dataset", code_repo, "artifacts/exp-a/model.json") is not None


def test_retention_deletes_finished_code_when_the_session_ends(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo, commit = make_repo(tmp_path, {"train.py": "print(1)\n"})
    backend = make(hub, tmp_path, keep_code="0s")
    handle = backend.submit(JobSpec("r", ("python", "train.py"), str(repo), commit=commit))
    assert wait_for(backend, handle, timeout=60).status is JobStatus.SUCCEEDED
    path = ("dataset", f"{hub.namespace}/autolab-lab-code", "experiments/r.tar.gz")
    assert hub.file(*path) is not None
    backend.close()  # the end of `autolab run`
    assert hub.file(*path) is None


def test_the_loops_hourly_cleanup_deletes_finished_code(hub: FakeHub, tmp_path: Path) -> None:
    repo, commit = make_repo(tmp_path, {"train.py": "print(1)\n"})
    backend = make(hub, tmp_path, keep_code="0s")
    handle = backend.submit(JobSpec("h", ("python", "train.py"), str(repo), commit=commit))
    assert wait_for(backend, handle, timeout=60).status is JobStatus.SUCCEEDED
    assert make(hub, tmp_path).cleanup() == []  # the default keeps it for 7 days
    assert backend.cleanup() == ["experiments/h.tar.gz"]
    assert hub.file("dataset", f"{hub.namespace}/autolab-lab-code", "experiments/h.tar.gz") is None


def test_a_job_with_code_times_out(hub: FakeHub, tmp_path: Path) -> None:
    repo, commit = make_repo(tmp_path, {"train.py": "import time; print('go', flush=True); "
                                                    "time.sleep(60)\n"})
    backend = make(hub, tmp_path)
    handle = backend.submit(JobSpec("t", ("python", "train.py"), str(repo), commit=commit,
                                    time_limit_s=2))
    state = wait_for(backend, handle, timeout=60)
    assert state.status is JobStatus.TIMEOUT, (state, read_all_logs(backend, handle))
    assert "go" in read_all_logs(backend, handle)


def test_a_running_jobs_code_is_kept(hub: FakeHub, tmp_path: Path) -> None:
    repo, commit = make_repo(tmp_path, {"train.py": "import time; time.sleep(30)\n"})
    backend = make(hub, tmp_path)
    handle = backend.submit(JobSpec("slow", ("python", "train.py"), str(repo), commit=commit))
    assert backend.clean_code(0, orphans=True) == []
    backend.cancel(handle)
    assert wait_for(backend, handle, timeout=30).status is JobStatus.CANCELLED
    assert backend.clean_code(0) == ["experiments/slow.tar.gz"]


# -- resources, money, options ---------------------------------------------------------------
def test_per_experiment_flavor_and_billing_by_the_minute(hub: FakeHub, tmp_path: Path) -> None:
    backend = make(hub, tmp_path, flavor="cpu-basic", setup_timeout=0)
    spec = JobSpec("f", ("python", "-c", "print(1)"), str(tmp_path), time_limit_s=61,
                   resources={"flavor": "a10g-small"})
    # a10g-small: $0.016667/min; 61 s is billed as 2 started minutes.
    assert backend.estimate_cost(spec) == pytest.approx(0.033334, rel=1e-3)
    assert billed_usd(60.0, 0.5) == 1.0 and billed_usd(60.0, 60) == 1.0 and billed_usd(60, 0) == 0
    handle = backend.submit(spec)
    state = wait_for(backend, handle, timeout=30)
    assert hub.jobs[handle.job_id].spec["flavor"] == "a10g-small"
    assert state.cost_usd == pytest.approx(0.016667, rel=1e-3)  # one started minute
    with pytest.raises(BackendError, match="a10g-small"):
        backend.submit(JobSpec("z", ("true",), str(tmp_path), resources={"flavor": "z100"}))


def test_gpu_metrics_are_read_from_the_jobs_api(hub: FakeHub, tmp_path: Path) -> None:
    backend = make(hub, tmp_path, flavor="a10g-small")
    handle = backend.submit(JobSpec("g", ("python", "-c", "import time; time.sleep(2)"),
                                    str(tmp_path)))
    state = wait_for(backend, handle, timeout=30)
    assert state.status is JobStatus.SUCCEEDED
    points = backend.system_metrics(handle)
    assert {p.name for p in points} == {"sys/gpu_util", "sys/gpu_mem_gb"}, points
    assert all(p.experiment_id == "g" for p in points)
    assert backend.system_metrics(handle) == []  # each sample is handed over once
    assert 40 <= state.hardware["gpu_util_mean"] <= 60


def test_volumes_mount_hub_repos_read_only(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=hub.token).create_repo("org/corpus", repo_type="dataset")
    backend = make(hub, tmp_path, volumes=["hf://datasets/org/corpus@v1/train:/data"])
    handle = backend.submit(JobSpec("v", ("python", "-c", "print(1)"), str(tmp_path)))
    assert wait_for(backend, handle, timeout=30).status is JobStatus.SUCCEEDED
    assert hub.jobs[handle.job_id].spec["volumes"] == [{
        "type": "dataset", "source": "org/corpus", "mountPath": "/data", "revision": "v1",
        "readOnly": True, "path": "train"}]
    missing = make(hub, tmp_path, volumes=["hf://datasets/org/nothing:/data"])
    with pytest.raises(BackendError, match="not found"):
        missing.submit(JobSpec("w", ("true",), str(tmp_path)))
    with pytest.raises(ConfigError, match="hf://datasets/ORG/NAME"):
        make(hub, tmp_path, volumes=["/local/path:/data"])
    assert parse_volume("hf://buckets/me/out:/out")["read_only"] is False

"""The optional capabilities of ``JobBackend`` and their defaults: ``submit_many`` (one by one,
in order), ``cleanup`` (nothing), ``disk_usage`` (None), ``system_metrics`` (no points).

The defaults run on the real ``local`` backend (real processes) and on the SDK's in-memory
backend; the overrides are covered where they live (tests/backends/test_slurm*.py for arrays,
cleanup and disk use, tests/backends/test_hf_jobs_hardening.py for GPU samples and code
retention, tests/run/test_backend_wiring.py for the loop's side).
"""

from __future__ import annotations

import sys
from pathlib import Path

from autolab.backends.local import LocalBackend
from autolab_core.interfaces import JobBackend
from autolab_core.models import JobSpec, JobStatus
from autolab_core.testing import InMemoryBackend, make_context, read_all_logs, wait_for


def test_defaults_submit_one_by_one_in_order_and_do_nothing_else(tmp_path: Path) -> None:
    backend = LocalBackend({"workers": 2}, make_context(tmp_path))
    specs = [JobSpec(f"e{i}", (sys.executable, "-c", f"print('job {i}')"), str(tmp_path))
             for i in range(3)]
    handles = backend.submit_many(specs)
    assert [h.experiment_id for h in handles] == ["e0", "e1", "e2"]
    assert len({h.job_id for h in handles}) == 3
    for i, handle in enumerate(handles):
        assert wait_for(backend, handle, timeout=60).status is JobStatus.SUCCEEDED
        assert f"job {i}" in read_all_logs(backend, handle)
        assert backend.system_metrics(handle) == []
    assert backend.cleanup() == [] and backend.disk_usage() is None
    backend.close()


def test_a_plugin_gets_the_defaults_without_writing_them(tmp_path: Path) -> None:
    backend = InMemoryBackend({}, make_context(tmp_path))
    for method in ("submit_many", "cleanup", "disk_usage", "system_metrics"):
        assert getattr(type(backend), method) is getattr(JobBackend, method)
    handles = backend.submit_many([JobSpec("a", ("true",), "."), JobSpec("b", ("true",), ".")])
    assert [h.experiment_id for h in handles] == ["a", "b"]
    assert [s.experiment_id for s in backend.world.submitted][-2:] == ["a", "b"]
    assert backend.submit_many([]) == []

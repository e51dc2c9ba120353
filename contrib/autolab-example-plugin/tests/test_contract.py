"""The JobBackend contract suite from autolab_core, run against ``example-subprocess``."""

from __future__ import annotations

from pathlib import Path

from autolab_example_plugin.backend import SubprocessBackend

from autolab_core.testing import JobBackendContract, make_context


class TestExampleSubprocessContract(JobBackendContract):
    timeout = 30.0

    def make_backend(self, tmp_path: Path) -> SubprocessBackend:
        return SubprocessBackend({"kill-grace": "1s"}, make_context(tmp_path))

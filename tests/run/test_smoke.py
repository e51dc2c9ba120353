"""Smoke checks (issue 14 point 1): a candidate's training runs on the orchestrator's machine
only when the backend runs its jobs there; for a remote backend only checks that do not
execute the patch (``py_compile``) run here."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toylab import TRAIN, make_toy_lab

from autolab.run.assemble import build_loop
from autolab.run.ledger import Ledger
from autolab.run.loop import RunOptions
from autolab.run.smoke import smoke_check
from autolab_core import hookimpl
from autolab_core.interfaces import JobBackend
from autolab_core.lab import Lab
from autolab_core.models import Hypothesis, JobHandle, JobSpec, JobState, JobStatus, LogChunk
from autolab_core.plugins import PluginManager
from autolab_core.vocab import Role

SMOKE_ALWAYS = '[search]\nfocus = ["LR"]\nsmoke = "always"\nsmoke_seconds = 20'


def marked_train(marker: Path) -> str:
    """train.py that leaves ``marker`` behind when it is executed."""
    return TRAIN.replace("SEED = int", f"open({str(marker)!r}, 'a').write('ran\\n')\nSEED = int")


def smoke_lab(tmp_path: Path) -> Lab:
    lab = make_toy_lab(tmp_path / "lab")
    cfg = (lab.root / "autolab.toml").read_text().replace('[search]\nfocus = ["LR"]', SMOKE_ALWAYS)
    (lab.root / "autolab.toml").write_text(cfg)
    subprocess.run(["git", "-C", str(lab.root), "commit", "-qam", "smoke always"], check=True)
    return Lab(lab.root)


def test_smoke_runs_the_patch_only_when_the_backend_runs_here(tmp_path: Path) -> None:
    lab = smoke_lab(tmp_path)
    marker = tmp_path / "ran.txt"
    commit = lab.create_branch("autolab/exp-smoke", lab.main_commit(),
                               {"train.py": marked_train(marker)}, "marker patch")
    exp = Ledger(lab, say=print).new(Hypothesis(id="m", title="marker"), Role.CANDIDATE)
    assert smoke_check(lab, runs_on_this_machine=False)(exp, commit) is None
    assert not marker.exists()  # never executed for a remote backend
    assert smoke_check(lab, runs_on_this_machine=True)(exp, commit) is None
    assert marker.read_text() == "ran\n"  # ...and executed (once) for a local one


class HeldRemoteQueue(JobBackend):
    """Stands for a remote service (a cluster queue, a cloud job API): it accepts jobs and
    holds them; nothing it is given runs on this machine. Only its capability matters here."""

    name = "held-remote-queue"
    runs_on_this_machine = False
    queues = True

    def __init__(self, options: Mapping[str, Any], context: Any) -> None:
        super().__init__(options, context)
        self.specs: dict[str, JobSpec] = {}

    def submit(self, spec: JobSpec) -> JobHandle:
        self.specs[spec.experiment_id] = spec
        return JobHandle(backend=self.name, job_id=spec.experiment_id,
                         experiment_id=spec.experiment_id)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        return {h.job_id: JobState(JobStatus.PENDING) for h in handles}

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        return LogChunk("", since)

    def cancel(self, handle: JobHandle) -> None:
        self.specs.pop(handle.job_id, None)

    def reattach(self, job_id: str) -> JobHandle | None:
        if job_id not in self.specs:
            return None
        return JobHandle(backend=self.name, job_id=job_id, experiment_id=job_id)


class Ideas:
    def __init__(self, code: str) -> None:
        self.code: str | None = code

    def propose(self, digest: object, n: int) -> list[Hypothesis]:
        code, self.code = self.code, None
        return [] if code is None else [Hypothesis(id="mark", title="mark", source="llm",
                                                   edits=({"replace": code},))]

    def write_patch(self, hypothesis: Hypothesis, files: Mapping[str, str]) -> dict[str, str]:
        return {"train.py": hypothesis.edits[0]["replace"]}


def test_loop_with_a_remote_backend_never_executes_a_candidate_here(tmp_path: Path) -> None:
    lab = smoke_lab(tmp_path)
    lab.root.joinpath("autolab.toml").write_text(lab.root.joinpath("autolab.toml").read_text()
                                                 .replace('name = "local"', 'name = "held-remote-queue"'))
    subprocess.run(["git", "-C", str(lab.root), "commit", "-qam", "remote"], check=True)
    lab = Lab(lab.root)
    pm = PluginManager()

    class Register:
        @hookimpl
        def autolab_register_backends(self, register: Any) -> None:
            register(HeldRemoteQueue)

    pm.register(Register(), name="held-remote")
    marker = tmp_path / "ran.txt"
    loop = build_loop(lab, RunOptions(workers=4, poll_interval=0.05, time_s=4.0,
                                      on_stop="detach"), say=print, pm=pm)
    assert not loop.backend.runs_on_this_machine
    loop.roles.proposer = loop.roles.writer = Ideas(marked_train(marker))
    exps = loop.run()
    (cand,) = [e for e in exps if e.role == Role.CANDIDATE]
    assert cand.commit and cand.handle is not None  # patched, checked and handed to the backend
    assert not marker.exists()


def test_backends_declare_capabilities_with_safe_defaults() -> None:
    from autolab.backends.hf_jobs import HfJobsBackend
    from autolab.backends.local import LocalBackend
    from autolab.backends.slurm import SlurmBackend
    from autolab_core.interfaces import MetricStore

    assert (JobBackend.runs_on_this_machine, JobBackend.queues) == (False, False)
    assert (LocalBackend.runs_on_this_machine, LocalBackend.queues) == (True, True)
    assert (SlurmBackend.runs_on_this_machine, SlurmBackend.queues) == (False, True)
    assert (HfJobsBackend.runs_on_this_machine, HfJobsBackend.queues) == (False, True)
    assert MetricStore.start.__qualname__ == "MetricStore.start"  # a no-op every store has

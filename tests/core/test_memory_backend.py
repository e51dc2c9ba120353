"""autolab_core.testing.InMemoryBackend: the contract where it applies, and scripted outcomes.

Nothing runs in this backend, so the contract's Python snippets are answered by a script that
states what each snippet would print and how it would end (the real-process behaviour is
covered by the contract runs of ``local``, the example plugin and the documented backend).
What the contract checks of the backend itself (states, cursors, cancel, time limit, batched
polls, reattaching from a new instance) runs unchanged.
"""

from __future__ import annotations

from pathlib import Path

from autolab_core.metriclines import find_result, parse_metric_line
from autolab_core.models import JobSpec, JobStatus
from autolab_core.runner import NONCE_ENV
from autolab_core.testing import (
    InMemoryBackend,
    JobBackendContract,
    MemoryWorld,
    ScriptedRun,
    make_context,
    read_all_logs,
    wait_for,
)


def contract_script(spec: JobSpec) -> ScriptedRun:
    """What each of the contract's snippets prints and how it ends."""
    code = spec.command[-1]
    if "sys.exit(3)" in code:
        return ScriptedRun(JobStatus.FAILED, output="bye\n", exit_code=3)
    if "time.sleep(120)" in code:
        return ScriptedRun(output="up\n", polls_running=None)
    if "CONTRACT_VAR" in code:
        return ScriptedRun(output=f"hello {spec.env['CONTRACT_VAR']}\ncwd-ok\n")
    if "range(3)" in code:
        return ScriptedRun(output="line 0\nline 1\nline 2\n", polls_running=3)
    if "print('done')" in code:
        return ScriptedRun(output="done\n", polls_pending=1, polls_running=2)
    return ScriptedRun(output=code.removeprefix("print(").removesuffix(")") + "\n")


class TestInMemoryContract(JobBackendContract):
    timeout = 30.0
    shares_workdir = False  # nothing runs, so nothing is written to the workdir

    def make_backend(self, tmp_path: Path) -> InMemoryBackend:
        return InMemoryBackend({}, make_context(tmp_path), script=contract_script)


def spec(experiment_id: str, nonce: str = "n0nce") -> JobSpec:
    return JobSpec(experiment_id, ("python", "-m", "autolab_core.runner"), "/nowhere",
                   env={NONCE_ENV: nonce})


def test_scripted_metrics_and_result_come_back_as_protocol_lines(tmp_path: Path) -> None:
    runs = {"good": ScriptedRun(metrics=[{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}],
                                result={"metric": "val_loss", "value": 1.9}, polls_pending=2,
                                polls_running=2, cost_usd=0.25),
            "oom": ScriptedRun(JobStatus.OOM, reason="killed (SIGKILL), likely out of memory")}
    backend = InMemoryBackend({}, make_context(tmp_path), script=lambda s: runs[s.experiment_id])
    good, oom = backend.submit(spec("good")), backend.submit(spec("oom"))
    seen = [backend.poll([good])[good.job_id].status for _ in range(5)]
    assert seen == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.RUNNING, JobStatus.RUNNING,
                    JobStatus.SUCCEEDED]
    final = backend.poll([good, oom])  # oom's first poll: RUNNING for one poll, then over
    assert final[good.job_id].cost_usd == 0.25 and final[good.job_id].slot == "in-memory"
    assert final[oom.job_id].status is JobStatus.RUNNING
    ended = backend.poll([oom])[oom.job_id]
    assert ended.status is JobStatus.OOM and ended.exit_code == 1 and "memory" in (ended.reason or "")
    text = read_all_logs(backend, good)
    points = [p for p in map(parse_metric_line, text.splitlines()) if p is not None]
    assert points == [(1, {"loss": 2.5}), (2, {"loss": 2.0})]
    result = find_result(text, "n0nce")
    assert result is not None and result["value"] == 1.9 and result["metric"] == "val_loss"
    assert find_result(text, "another-nonce") is None
    assert [s.experiment_id for s in backend.submitted] == ["good", "oom"]


def test_backends_on_one_world_share_jobs(tmp_path: Path) -> None:
    world = MemoryWorld()
    a = InMemoryBackend({}, make_context(tmp_path / "a"), world=world)
    b = InMemoryBackend({}, make_context(tmp_path / "b"), world=world)
    first, second = a.submit(spec("e1")), a.submit(spec("e1"))
    found = b.find("e1")
    assert found is not None and found.job_id == second.job_id != first.job_id
    assert wait_for(b, first, timeout=5, interval=0).status is JobStatus.SUCCEEDED
    alone = InMemoryBackend({}, make_context(tmp_path / "c"))
    assert alone.reattach(first.job_id) is None and alone.find("e1") is None

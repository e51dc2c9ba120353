"""The SLURM commands the slurm backend runs: squeue, sacct, scancel, sinfo, sbatch --test-only.

Every call answers for many jobs at once (one ``squeue`` for all of the user's jobs), has a
timeout, and turns failures into :class:`~autolab_core.errors.BackendError` naming the command.
sbatch's refusals are translated into messages naming the ``[backend.slurm]`` option at fault.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterable, Sequence

import attrs

from autolab_core.errors import BackendError

COMMAND_TIMEOUT_S = 30.0
_SQUEUE_FIELDS = ("JobArrayID", "State", "Reason", "RestartCnt", "StartTime", "EndTime", "NodeList",
                  "Partition", "Name", "Comment")
_SACCT_FIELDS = ("JobID", "State", "ExitCode", "Start", "End", "NodeList", "JobName")


@attrs.frozen
class Row:
    """One job as squeue or sacct reports it. ``state`` is the bare SLURM state name."""

    job_id: str
    state: str
    reason: str = ""
    restarts: int = 0
    start: float | None = None
    end: float | None = None
    nodes: str = ""
    name: str = ""
    comment: str = ""
    exit_code: int | None = None
    partition: str = ""


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a SLURM command; a missing binary or a hang becomes a BackendError."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BackendError(
            f"{argv[0]} is not on PATH: run the orchestrator on a SLURM login node "
            "(or start the local test cluster: scripts/local-slurm.sh up)"
        ) from None
    except subprocess.TimeoutExpired:
        raise BackendError(
            f"{argv[0]} did not answer within {timeout:g} s: is the SLURM controller up? (sinfo)"
        ) from None


def _time(value: str) -> float | None:
    value = value.strip()
    if not value or value in ("N/A", "Unknown", "None", "(null)"):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _clean(value: str) -> str:
    value = value.strip()
    return "" if value in ("(null)", "None", "N/A") else value


def parse_squeue(text: str) -> dict[str, Row]:
    """Rows of ``squeue -O JobID:|,...`` output, keyed by job id."""
    rows: dict[str, Row] = {}
    n = len(_SQUEUE_FIELDS)
    for line in text.splitlines():
        parts = line.split("|", n - 1)
        if len(parts) < n:
            continue
        job_id, state, reason, restarts, start, end, nodes, partition, name, comment = parts
        job_id = job_id.strip()
        comment = comment[:-1] if comment.endswith("|") else comment
        rows[job_id] = Row(
            job_id=job_id,
            state=state.strip().split()[0] if state.strip() else "UNKNOWN",
            reason=_clean(reason),
            restarts=int(restarts) if restarts.strip().isdigit() else 0,
            start=_time(start),
            end=_time(end),
            nodes=_clean(nodes),
            partition=partition.strip(),
            name=name.strip(),
            comment=_clean(comment),
        )
    return rows


def squeue(user: str, names: Iterable[str] = ()) -> dict[str, Row]:
    """Every job of ``user`` that the controller still holds (all states), in one call."""
    fmt = ",".join(f"{f}:|" for f in _SQUEUE_FIELDS)
    argv = ["squeue", "--noheader", "--array", "--states=all", f"--user={user}", f"--Format={fmt}"]
    names = list(names)
    if names:
        argv.append("--name=" + ",".join(names))
    proc = run(argv)
    if proc.returncode != 0:
        raise BackendError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_squeue(proc.stdout)


def parse_sacct(text: str) -> dict[str, Row]:
    """Rows of ``sacct --parsable2 --noheader -o JobID,State,...`` output."""
    rows: dict[str, Row] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != len(_SACCT_FIELDS):
            continue
        job_id, state, exit_code, start, end, nodes, name = parts
        code = exit_code.split(":")[0]
        rows[job_id] = Row(
            job_id=job_id,
            state=state.split()[0] if state else "UNKNOWN",
            start=_time(start),
            end=_time(end),
            nodes=_clean(nodes),
            name=name,
            exit_code=int(code) if code.isdigit() else None,
        )
    return rows


def sacct(job_ids: Sequence[str] = (), names: Sequence[str] = ()) -> dict[str, Row] | None:
    """Jobs from the accounting database, or None where the cluster keeps no accounting."""
    argv = ["sacct", "--noheader", "--parsable2", "--allocations", "-o", ",".join(_SACCT_FIELDS)]
    if job_ids:
        argv.append("--jobs=" + ",".join(job_ids))
    if names:
        argv += ["--name=" + ",".join(names), "--starttime=now-30days"]
    proc = run(argv)
    if proc.returncode != 0:
        if "accounting storage is disabled" in (proc.stderr + proc.stdout).lower():
            return None
        raise BackendError(f"sacct failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_sacct(proc.stdout)


def scancel(*job_ids: str) -> None:
    """Cancel ``job_ids`` in one call; jobs that already ended are no error."""
    if not job_ids:
        return
    proc = run(["scancel", *job_ids])
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.strip() and "already completing or completed" not in ln and "Invalid job id" not in ln]
    if proc.returncode != 0 and errors:
        raise BackendError(f"scancel {' '.join(job_ids)} failed ({proc.returncode}): {'; '.join(errors)}")


def sinfo_partitions() -> list[str]:
    """The partition names the controller reports, hidden ones included; raises when it does not answer."""
    return list(sinfo_limits())


def parse_duration_minutes(text: str) -> float | None:
    """SLURM's ``[days-]hours:minutes:seconds`` / ``minutes:seconds`` in minutes; None for infinite."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 3:
        h, m, sec = parts
    elif len(parts) == 2:
        h, m, sec = 0, parts[0], parts[1]
    else:
        h, m, sec = 0, parts[0], 0
    return (int(days or 0) * 24 + h) * 60 + m + sec / 60


def sinfo_limits() -> dict[str, float | None]:
    """Every partition (``sinfo --all``: hidden ones too) -> its MaxTime in minutes (None: none)."""
    proc = run(["sinfo", "--all", "--noheader", "--format=%P|%l"], timeout=15)
    if proc.returncode != 0:
        raise BackendError(
            f"the SLURM controller does not answer (sinfo: {proc.stderr.strip() or proc.returncode}); "
            "is slurmctld running? For the local test cluster: scripts/local-slurm.sh up"
        )
    out: dict[str, float | None] = {}
    for line in proc.stdout.splitlines():
        name, _, limit = line.partition("|")
        if name.strip():
            out[name.strip().rstrip("*")] = parse_duration_minutes(limit)
    return out


def partition_has_usable_node(partition: str) -> bool:
    """False when every node of ``partition`` is down, drained or failing."""
    proc = run(["sinfo", "--noheader", f"--partition={partition}", "--format=%T"], timeout=15)
    if proc.returncode != 0:
        return True  # cannot tell: keep waiting
    states = [s.strip().rstrip("*~#!%$@^-") for s in proc.stdout.split()]
    return any(not s.startswith(("down", "drain", "fail", "inval", "future")) for s in states)


def accounting_enabled() -> bool:
    """True when the cluster keeps an accounting database (sacctmgr, associations, QOS)."""
    proc = run(["scontrol", "show", "config"], timeout=15)
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", proc.stdout, re.MULTILINE)
    return bool(match) and match.group(1) != "accounting_storage/none"  # type: ignore[union-attr]


def parse_associations(text: str) -> list[tuple[str, str, set[str]]]:
    """``sacctmgr -nP show assoc format=account,partition,qos`` rows as (account, partition, qos set)."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            rows.append((parts[0], parts[1], {q for q in parts[2].split(",") if q}))
    return rows


def associations(user: str) -> list[tuple[str, str, set[str]]]:
    proc = run(["sacctmgr", "--noheader", "--parsable2", "show", "assoc", f"user={user}",
                "format=account,partition,qos"], timeout=15)
    if proc.returncode != 0:
        raise BackendError(f"sacctmgr failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_associations(proc.stdout)


def association_problem(rows: list[tuple[str, str, set[str]]], account: str | None,
                        partition: str | None, qos: str | None) -> str | None:
    """Why ``account``/``partition``/``qos`` is not an association of the user, or None."""
    hint = "see yours with: sacctmgr show assoc user=$USER format=account,partition,qos"
    if not rows:
        return None
    mine = [r for r in rows if account is None or r[0] == account]
    if not mine:
        return (f"[backend.slurm] account = {account!r} is not one of your accounts "
                f"({', '.join(sorted({r[0] for r in rows}))}); {hint}")
    if partition is not None:
        fitting = [r for r in mine if r[1] in ("", partition)]
        if not fitting:
            return (f"[backend.slurm] account {mine[0][0]!r} may not use partition = {partition!r} "
                    f"(its partitions: {', '.join(sorted({r[1] for r in mine}))}); {hint}")
        mine = fitting
    if qos is not None and not any(qos in r[2] for r in mine):
        allowed = sorted(set().union(*(r[2] for r in mine)))
        return (f"[backend.slurm] qos = {qos!r} is not allowed for this account/partition "
                f"(allowed: {', '.join(allowed) or 'none listed'}); {hint}")
    return None


# sbatch's refusal messages -> the [backend.slurm] option to fix
_OPTION_ERRORS: tuple[tuple[str, str], ...] = (
    (r"time limit", "time_limit"),
    (r"account", "account"),  # before partition: "Invalid account or account/partition ..."
    (r"partition", "partition"),
    (r"memory|mem-per", "mem"),
    (r"processors|cpus|cpu count", "cpus_per_task"),
    (r"gres|gpu", "gpus_per_task"),
    (r"feature|constraint", "constraint"),
    (r"qos|quality of service", "qos"),
    (r"node configuration", "cpus_per_task, mem, gpus_per_task or constraint"),
)


def option_at_fault(message: str) -> str | None:
    """The option an sbatch error message is about, or None when it names none."""
    lowered = message.lower()
    for pattern, option in _OPTION_ERRORS:
        if re.search(pattern, lowered):
            return option
    return None


def sbatch_error_lines(text: str) -> str:
    """sbatch's own error lines from a failure's output (submitit wraps them in a traceback)."""
    lines = [ln.strip() for ln in text.splitlines()
             if "error" in ln.lower() or "allocation failure" in ln.lower()]
    keep = [ln for ln in lines if ln.startswith(("sbatch", "allocation failure"))] or lines
    return "; ".join(dict.fromkeys(keep)) or text.strip()[-500:]


def sbatch_test_only(flags: Sequence[str]) -> str | None:
    """``sbatch --test-only`` with ``flags``: None when SLURM would accept the job, else why not."""
    proc = run(["sbatch", "--test-only", *flags, "--wrap", "true"])
    if proc.returncode == 0:
        return None
    return sbatch_error_lines(proc.stderr + proc.stdout)


def default_partition() -> str | None:
    """The partition jobs go to without ``--partition`` (marked ``*`` by sinfo)."""
    proc = run(["sinfo", "--noheader", "--format=%P"], timeout=15)
    for name in proc.stdout.split():
        if name.endswith("*"):
            return name.rstrip("*")
    return None

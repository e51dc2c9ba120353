"""What SLURM's words mean for a job: pending reasons that never clear, refusals worth retrying.

SLURM keeps a job PENDING with a reason (``squeue -O Reason``). Most reasons clear by
themselves (``Priority``, ``Resources``, ``QOSMaxJobsPerUserLimit``...); the ones below never
do, because the job asks for something its partition, QOS or association will never grant. A
job pending for one of them is cancelled and ends FAILED with SLURM's reason and what to change.

sbatch refusals are either transient (the controller is busy or unreachable, a submit limit is
full: retry with backoff) or permanent (anything else: stop and say what SLURM said).
"""

from __future__ import annotations

import re

_ASSOC = "sacctmgr show assoc user=$USER format=account,partition,qos,maxwall,maxtres"
_QOS = "sacctmgr show qos format=name,maxwall,maxtrespu,maxtres"
_TIME = ("lower [backend.slurm] time_limit (or [run] time_limit, which sets the wall time to "
         "itself plus 2 min) below")
_SIZE = "lower cpus_per_task, mem or the GPUs asked ([backend.slurm]) to fit"

#: Pending reasons that cannot clear -> what to change.
PERMANENT_PENDING: dict[str, str] = {
    "PartitionTimeLimit": f"{_TIME} the partition's MaxTime (sinfo --all -o '%P %l')",
    "QOSMaxWallDurationPerJobLimit": f"{_TIME} the QOS's MaxWall, or choose another qos ({_QOS})",
    "AssocMaxWallDurationPerJobLimit": f"{_TIME} your association's MaxWall ({_ASSOC})",
    "InvalidAccount": f"set [backend.slurm] account to one of your accounts ({_ASSOC})",
    "InvalidQOS": f"set [backend.slurm] qos to one your account may use ({_ASSOC})",
    "AccountNotAllowed": f"the partition does not allow this account: change account or partition ({_ASSOC})",
    "QOSNotAllowed": f"the partition does not allow this qos: change qos or partition ({_ASSOC})",
    "PartitionNodeLimit": f"the job asks for more nodes than the partition allows: {_SIZE}",
    "PartitionConfig": f"the partition's nodes cannot hold the job: {_SIZE} (scontrol show partition)",
    "BadConstraints": "no node has the features asked: fix [backend.slurm] constraint (sinfo -o '%N %f')",
    "QOSMaxCpuPerJobLimit": f"the QOS allows fewer CPUs per job: {_SIZE} ({_QOS})",
    "QOSMaxGRESPerJob": f"the QOS allows fewer GPUs per job: {_SIZE} ({_QOS})",
    "QOSMaxMemoryPerJob": f"the QOS allows less memory per job: {_SIZE} ({_QOS})",
    "QOSMaxNodePerJobLimit": f"the QOS allows fewer nodes per job: {_SIZE} ({_QOS})",
    "AssocMaxCpuPerJobLimit": f"your association allows fewer CPUs per job: {_SIZE} ({_ASSOC})",
    "AssocMaxGRESPerJob": f"your association allows fewer GPUs per job: {_SIZE} ({_ASSOC})",
    "AssocMaxMemPerJob": f"your association allows less memory per job: {_SIZE} ({_ASSOC})",
    "AssocMaxNodesPerJob": f"your association allows fewer nodes per job: {_SIZE} ({_ASSOC})",
    "DependencyNeverSatisfied": "a dependency in sbatch_args can never be met: remove it",
}

#: Pending reasons saying the job's nodes are down, drained or reserved; they never clear when
#: every node of the partition is down or drained (the backend asks sinfo).
_NODES_UNAVAILABLE = re.compile(r"ReqNodeNotAvail|Nodes required for job are DOWN", re.IGNORECASE)

#: sbatch refusals that pass by themselves: retry with backoff.
_TRANSIENT = re.compile(
    r"unable to contact slurm controller|socket timed out|temporarily unable|try again|"
    r"resource temporarily unavailable|connection refused|transport endpoint|"
    r"submit limit|MaxSubmit|QOSMaxSubmit|AssocMaxSubmit|slurmctld.*(busy|not responding)|"
    r"is not on PATH|did not answer within",
    re.IGNORECASE,
)


def reason_code(reason: str) -> str:
    """The reason's leading word: ``"ReqNodeNotAvail, UnavailableNodes:n1"`` -> ``ReqNodeNotAvail``."""
    return re.split(r"[,\s(]", reason.strip(), maxsplit=1)[0] if reason.strip() else ""


def permanent_pending(reason: str) -> str | None:
    """What to change when ``reason`` can never clear; None when waiting may help."""
    return PERMANENT_PENDING.get(reason_code(reason))


def nodes_unavailable(reason: str) -> bool:
    """True for SLURM's "the nodes this job needs are down, drained or reserved" reasons."""
    return bool(_NODES_UNAVAILABLE.search(reason))


def transient_refusal(message: str) -> bool:
    """True when an sbatch refusal may pass by itself (retry later), False when it is final."""
    return bool(_TRANSIENT.search(message))


def backoff(failures: int, base: float, cap: float = 600.0) -> float:
    """Seconds to wait after ``failures`` failures in a row: base, 2 base, 4 base... up to cap."""
    return float(min(cap, base * 2.0 ** max(0, failures - 1)))

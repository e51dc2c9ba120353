"""``[backend.slurm]`` options, validated with messages that name the option."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs

from autolab_core.validators import non_negative, positive

#: Extra minutes asked of SLURM beyond a job's own time limit (which the job wrapper enforces
#: to the second): room for the setup lines and interpreter start-up.
SLURM_TIME_GRACE_S = 120.0

_MEM = re.compile(r"^\d+(\.\d+)?\s*([KMGT]B?)?$", re.IGNORECASE)


def _mem(_inst: Any, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _MEM.match(value):
        raise ValueError(
            f"mem = {value!r} is not a SLURM memory size; write it like '4G', '512M' or '64000M'"
        )


def _non_empty(_inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise ValueError(f"{attribute.name} is empty; remove it or give a value")


def parse_sbatch_args(args: list[str]) -> dict[str, Any]:
    """``["--reservation=ml", "--exclusive"]`` as submitit's ``additional_parameters``."""
    out: dict[str, Any] = {}
    for arg in args:
        match = re.fullmatch(r"--([A-Za-z][A-Za-z0-9-]*)(?:=(.*))?", arg.strip())
        if not match:
            raise ValueError(
                f"sbatch_args entry {arg!r} is not a long sbatch option; write it as "
                "'--name=value' or '--flag' (e.g. '--reservation=ml', '--exclusive')"
            )
        key, value = match.group(1), match.group(2)
        out[key.replace("-", "_")] = True if value is None else value
    return out


def _sbatch_args(_inst: Any, _attribute: attrs.Attribute[Any], value: list[str]) -> None:
    parse_sbatch_args(value)


@attrs.frozen
class SlurmOptions:
    """Where and how jobs run. Every field maps to one sbatch flag or one backend behaviour."""

    partition: str | None = attrs.field(default=None, validator=_non_empty)
    account: str | None = attrs.field(default=None, validator=_non_empty)
    qos: str | None = attrs.field(default=None, validator=_non_empty)
    gpus_per_task: int | None = attrs.field(default=None, validator=non_negative)
    #: Generic resources as sbatch ``--gres`` takes them, e.g. ``"gpu:a100:1"``.
    gres: str | None = attrs.field(default=None, validator=_non_empty)
    #: GPUs for the whole job (``--gpus``), e.g. ``1`` or ``"a100:2"``.
    gpus: int | str | None = None
    cpus_per_gpu: int | None = attrs.field(default=None, validator=positive)
    mem_per_gpu: str | None = attrs.field(default=None, validator=_mem)
    cpus_per_task: int | None = attrs.field(default=None, validator=positive)
    mem: str | None = attrs.field(default=None, validator=_mem)
    #: SLURM wall time for every job; default: the job's own time limit plus two minutes.
    time_limit: float | None = attrs.field(
        default=None, metadata={"duration": True}, validator=positive
    )
    constraint: str | None = attrs.field(default=None, validator=_non_empty)
    #: Shell lines run before the job (``module load cuda``, ``source ~/venv/bin/activate``).
    setup: list[str] = attrs.field(factory=list)
    #: Any other sbatch flags, e.g. ``["--reservation=ml", "--exclusive"]``.
    sbatch_args: list[str] = attrs.field(factory=list, validator=_sbatch_args)
    #: sbatch options as a table, as Hydra's submitit launcher takes them,
    #: e.g. ``{ reservation = "ml", exclusive = true }``.
    additional_parameters: dict[str, Any] = attrs.field(factory=dict)
    #: Extra arguments of the ``srun`` that starts the job step, e.g. ``["--cpu-bind=cores"]``.
    srun_args: list[str] = attrs.field(factory=list)
    #: The most tasks of one job array running at once (sbatch ``--array=...%N``).
    array_parallelism: int | None = attrs.field(default=None, validator=positive)
    #: The most of your jobs in the SLURM queue at once (pending + running), e.g. the QOS's
    #: MaxSubmitJobs. Beyond it submissions wait locally and go out when room frees.
    max_queued: int | None = attrs.field(default=None, validator=positive)
    #: Submit a wave of experiments (``submit_many``) as one job array.
    array: bool = False
    #: Seconds between two squeue calls, however often the orchestrator polls.
    poll_interval_s: float = attrs.field(default=5.0, validator=non_negative)
    #: Resubmissions after preemption or node failure before giving up with PREEMPTED.
    max_retries: int = attrs.field(default=2, validator=non_negative)
    #: Where job files go; must be on the filesystem the compute nodes share.
    folder: str | None = None
    #: The Python that runs jobs on compute nodes; default: this interpreter. It may be a
    #: wrapper such as ``"apptainer exec img.sif python3"``; it is applied once (submitit's
    #: launcher starts with it, and the job's own Python command reuses that interpreter).
    python: str | None = None
    #: Check at startup (``check()``) with one tiny job that the compute nodes see the lab's
    #: files and can import the job runner with ``python``; the result is remembered.
    probe: bool = True
    #: How long the startup probe may wait for its job (pending included).
    probe_timeout: float = attrs.field(default=300.0, metadata={"duration": True},
                                       validator=positive)
    #: Job folders of finished experiments older than this are removed (``cleanup()``).
    retention: float = attrs.field(default=7 * 86400.0, metadata={"duration": True},
                                   validator=non_negative)

    def minutes(self, time_limit_s: float | None) -> int | None:
        """The sbatch ``--time`` in minutes for a job with ``time_limit_s``, or None (default)."""
        if self.time_limit is not None:
            return max(1, math.ceil(self.time_limit / 60))
        if time_limit_s is not None:
            return max(1, math.ceil((time_limit_s + SLURM_TIME_GRACE_S) / 60))
        return None

"""The lab's fixed words: experiment roles, the gate's verdicts and anomaly flags.

They are :class:`enum.StrEnum` members, so they compare equal to the plain strings kept in
older records (``exp.role == "baseline"`` still holds) and serialise as those strings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs


class Role(enum.StrEnum):
    """Why an experiment runs."""

    CANDIDATE = "candidate"  # a new idea
    BASELINE = "baseline"  # a noise-calibration run of main
    CONFIRM = "confirm"  # an extra seed of a candidate that looked like a win


class Verdict(enum.StrEnum):
    """What the gate (or the ledger) decided about an experiment."""

    PROMOTED = "promoted"
    REJECTED = "rejected"  # refused before it ran (duplicate, bad patch, failed smoke check)
    NOT_BETTER = "not better"
    CONFIRMING = "confirming"
    FAILED_CONFIRMATION = "failed confirmation"
    NOT_CONFIRMED = "not confirmed"
    NEEDS_REVIEW = "needs review"  # flagged: a person must approve it
    NEEDS_EQUAL_COMPUTE = "needs equal-compute comparison"
    REVALIDATING = "revalidating"


class FlagKind(enum.StrEnum):
    """Anomalies the Reporter can raise on an experiment."""

    NAN = "nan"
    DIVERGENCE = "divergence"
    STALL = "stall"
    THROUGHPUT = "throughput_drop"
    CRASH_OOM = "crash_oom"
    CRASH_TIMEOUT = "crash_timeout"
    CRASH_ERROR = "crash_error"
    CRASH_PREEMPTED = "crash_preemption"
    IMPLAUSIBLE = "implausible_metric"
    FORGED_RESULT = "forged_result"  # a result line without the run's signature: tampering
    SEED_IGNORED = "seed_ignored"  # identical results on different seeds: a fixed seed
    APPROVED = "approved"  # a person cleared the experiment's other flags


#: Flags that keep an experiment from being promoted until a person clears them. A throughput
#: drop is reported but does not block: wall-clock speed moves with the machine's load.
BLOCKING: frozenset[str] = frozenset({
    FlagKind.NAN, FlagKind.DIVERGENCE, FlagKind.STALL, FlagKind.CRASH_OOM,
    FlagKind.CRASH_TIMEOUT, FlagKind.CRASH_ERROR, FlagKind.CRASH_PREEMPTED, FlagKind.IMPLAUSIBLE,
    FlagKind.FORGED_RESULT, FlagKind.SEED_IGNORED,
})


@attrs.frozen
class Flag:
    """One anomaly flag as kept in ``Experiment.flags`` (``"<kind>: <reason>"``)."""

    kind: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}" if self.reason else str(self.kind)

    @classmethod
    def parse(cls, text: str) -> Flag:
        """A flag from its stored text; ``"crash: oom: ..."`` (older records) maps to ``crash_oom``."""
        kind, _, reason = text.partition(":")
        kind, reason = kind.strip(), reason.strip()
        if kind == "crash":
            sub, _, rest = reason.partition(":")
            sub = {"preempted": "preemption", "failed": "error"}.get(sub.strip(), sub.strip())
            if f"crash_{sub}" in BLOCKING:
                return cls(f"crash_{sub}", rest.strip() or reason)
        return cls(kind, reason)

    @property
    def blocking(self) -> bool:
        return self.kind in BLOCKING


def kinds(flags: Iterable[str]) -> set[str]:
    """The kinds among stored flag texts (to report each kind once per experiment)."""
    return {Flag.parse(f).kind for f in flags}


def needs_human(flags: Iterable[str]) -> bool:
    """True when any stored flag blocks automatic promotion."""
    return any(Flag.parse(f).blocking for f in flags)

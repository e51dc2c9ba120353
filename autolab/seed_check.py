"""Baselines that come out identical: the script ignores the seed autolab gives it.

Noise is measured by running unchanged ``main`` with different seeds. A script that fixes its
own seed (``torch.manual_seed(1337)``) gives the same number every time, the measured noise is
zero and only ``[promotion] min_sigma`` stands between a lucky patch and ``main``. The loop calls
:func:`seed_warning` on the baseline values of the current ``main`` and prints what it returns
in the run output and in ``status``; nothing here has side effects.

What every job gets (see docs/own-lab.md, "Seeds"): ``AUTOLAB_SEED`` (or the name in
``[run] seed_env``) is the run's seed for everything. A project that must keep its fixed seed
can opt in to noise from one source only: ``AUTOLAB_SEED_DATA`` (data order / sampling) and
``AUTOLAB_SEED_INIT`` (weight init) carry the same number (their names start with
``AUTOLAB_SEED`` so every backend's allow-listed job environment passes them on). A script that
cannot be edited can take the seed on its command line: ``{seed}`` in ``[run] command`` is
replaced by the run's seed (``python train.py --seed {seed}``, Hydra ``seed={seed}``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from autolab_core.models import Experiment

DATA_SEED_ENV = "AUTOLAB_SEED_DATA"
INIT_SEED_ENV = "AUTOLAB_SEED_INIT"
SEED_PLACEHOLDER = "{seed}"


def identical_baselines(values: Sequence[float]) -> bool:
    """True when at least two baseline values exist and all are the same number (zero spread:
    the seeds changed nothing)."""
    finite = [v for v in values if math.isfinite(v)]
    return len(finite) >= 2 and len(finite) == len(values) and max(finite) - min(finite) == 0.0


def framework_lines(seed_env: str = "AUTOLAB_SEED") -> list[str]:
    """One line per framework: how to take the run's seed from the environment."""
    read = f'int(os.environ.get("{seed_env}", "0"))'
    return [
        f"Python:       import os, random; seed = {read}; random.seed(seed)",
        "NumPy:        np.random.seed(seed)  # or rng = np.random.default_rng(seed)",
        "PyTorch:      torch.manual_seed(seed)  # seeds CPU and every CUDA device",
        "JAX:          key = jax.random.PRNGKey(seed)",
        "Transformers: transformers.set_seed(seed)",
        "Lightning:    lightning.seed_everything(seed)  # pytorch_lightning.seed_everything",
    ]


def seed_warning(values: Sequence[float], metric: str = "the metric",
                 seed_env: str = "AUTOLAB_SEED", min_sigma: float = 0.0) -> str | None:
    """The user-facing warning when the baselines of unchanged ``main`` are identical, else None.

    ``values``: the baseline metric values of the current ``main`` (one per seed).
    """
    if not identical_baselines(values):
        return None
    floor = (f"[promotion] min_sigma = {min_sigma:g} is used instead" if min_sigma > 0 else
             "[promotion] min_sigma is 0, so any difference counts as a win: set min_sigma, or")
    lines = [
        f"warning: {len(values)} baseline runs of unchanged main gave the same {metric} "
        f"({values[0]:g}): the noise cannot be measured, {floor}.",
        f"The script probably fixes its own seed (or rounds {metric} when printing it). "
        f"Read the run's seed from ${seed_env}:",
        *("  " + line for line in framework_lines(seed_env)),
        f"To keep a fixed seed and vary one source only, read ${DATA_SEED_ENV} (data order) or "
        f"${INIT_SEED_ENV} (weight init); a script you cannot edit can take the seed as "
        f"an argument: {SEED_PLACEHOLDER} in [run] command (e.g. --seed {SEED_PLACEHOLDER}).",
    ]
    return "\n".join(lines)


def seed_status(values: Sequence[float], metric: str = "the metric") -> str | None:
    """One line for ``autolab status`` (None when the baselines differ)."""
    if not identical_baselines(values):
        return None
    return (f"seeds: {len(values)} baselines of main gave the same {metric} ({values[0]:g}); "
            f"the script ignores AUTOLAB_SEED, noise is not measured (see docs/own-lab.md#seeds)")


def seed_env(seed: int, seed_env_name: str = "AUTOLAB_SEED") -> dict[str, str]:
    """The seed variables a job gets: the run's seed under every documented name."""
    return {seed_env_name: str(seed), DATA_SEED_ENV: str(seed), INIT_SEED_ENV: str(seed)}


def seeded_argv(argv: Sequence[str], seed: int) -> tuple[str, ...]:
    """``argv`` with ``{seed}`` replaced by ``seed`` in every argument."""
    return tuple(arg.replace(SEED_PLACEHOLDER, str(seed)) for arg in argv)



def ignored_seed(exp: Experiment, experiments: Sequence[Experiment]) -> str | None:
    """Why ``exp`` (a candidate or confirmation run that just finished) ignores the seed it was
    given: its value is bit for bit that of a run of the same code with another seed. A fixed,
    lucky seed would otherwise pass the confirmation runs as a real win. None when it differs."""
    if exp.result is None or not exp.code_hash or exp.role not in ("candidate", "confirm"):
        return None
    main = {o.result.value for o in experiments
            if o.role == "baseline" and o.base_code == exp.base_code and o.result is not None}
    if len(main) < 2:
        return None  # main's own runs do not show that the lab honours the seed
    for other in experiments:
        same_code = other.code_hash == exp.code_hash and other.role in ("candidate", "confirm")
        # a patch that only pins main's seed reproduces main's run on that seed bit for bit
        main_run = other.role == "baseline" and other.base_code == exp.base_code
        if (other.id != exp.id and (same_code or main_run) and other.seed != exp.seed
                and other.result is not None and other.result.value == exp.result.value):
            return (f"{exp.result.metric} {exp.result.value!r} on seed {exp.seed} is identical to "
                    f"run {other.id} on seed {other.seed}: the patch ignores the seed the runner "
                    "sets (a fixed seed is not a win)")
    return None

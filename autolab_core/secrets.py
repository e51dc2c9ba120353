"""Keep secrets away from patched code and out of everything autolab writes.

Standard library only: the runner uses it inside jobs. Two tools:

- :func:`job_env` builds the environment for a process that runs lab (possibly LLM-patched)
  code from an allow-list of variable names, never passing on anything that looks like a token,
  key or password, whatever its prefix.
- :func:`scrub` replaces every secret value in a text (a reason, a log tail, a commit message)
  with ``***`` before it is written anywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

#: Variables a training process may see: what interpreters, toolkits and schedulers need.
ALLOWED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
    "PWD", "HOSTNAME", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHASHSEED",
    "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "CUDA_VISIBLE_DEVICES", "CUDA_HOME",
    "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE", "NUMEXPR_NUM_THREADS", "MPLBACKEND",
})
#: Prefixes of variables a training process may see (schedulers, toolkits, locales).
ALLOWED_PREFIXES = ("LC_", "SLURM_", "SRUN_", "CUDA_", "NVIDIA_", "NCCL_", "TORCH_", "XDG_",
                    "CONDA_", "AUTOLAB_SEED", "AUTOLAB_RUN_", "MUJOCO_", "JAX_", "XLA_")
#: A name that matches this is never passed on, even when allowed by name or prefix.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH|COOKIE|"
                         r"SESSION|_KEY$|^KEY$", re.IGNORECASE)
#: Secret values shorter than this are not scrubbed (they would mangle ordinary words).
MIN_SECRET_LEN = 6


def looks_secret(name: str) -> bool:
    """True for variable names that hold credentials (``HF_TOKEN``, ``OPENAI_API_KEY``, ...)."""
    return bool(SECRET_NAME.search(name))


def job_env(base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None,
            passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The environment for lab code: allow-listed names from ``base`` (default ``os.environ``),
    plus ``passthrough`` names the user declared, plus ``extra`` (set by autolab). Names that
    look secret are dropped from all three."""
    base = os.environ if base is None else base
    allowed = set(passthrough)
    env = {k: v for k, v in base.items()
           if (k in ALLOWED_NAMES or k in allowed or k.startswith(ALLOWED_PREFIXES))
           and not looks_secret(k)}
    env.update({k: v for k, v in (extra or {}).items() if not looks_secret(k)})
    return env


def secret_values(env: Mapping[str, str] | None = None,
                  also: Iterable[str] = ()) -> list[str]:
    """Values to scrub: those of secret-looking variables in ``env`` plus ``also``, longest
    first (so a secret that contains another is replaced whole)."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if looks_secret(k)} | set(also)
    return sorted((v for v in found if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***`` (default: the secret-looking
    variables of this process's environment)."""
    values = secret_values() if secrets is None else [s for s in secrets if len(s) >= MIN_SECRET_LEN]
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    return text

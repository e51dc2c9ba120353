"""``[backend.hf-jobs]`` options, the ``huggingface_hub`` version autolab needs, volumes.

The default image is ``pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime`` (Docker Hub, public:
Python 3.11, torch 2.6 with CUDA 12.4), so a torch lab needs no install at all. Nothing of
autolab is installed in the container: the job runtime travels in the code archive.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

import attrs

from autolab.commands.distribution import unrelated_autolab
from autolab_core.errors import ConfigError

#: The first huggingface_hub release with every call the backend makes: ``run_job(name=,
#: labels=, volumes=)`` (names: 1.24.0, #4532; volumes: 1.8.0), ``list_jobs(labels=, status=)``
#: (1.21, #4395), ``fetch_job_metrics`` (#3655), ``inspect_job``, ``cancel_job``,
#: ``fetch_job_logs(follow=)`` and ``list_jobs_hardware``.
MIN_HF_HUB = (1, 24, 0)
MIN_HF_HUB_TEXT = ".".join(map(str, MIN_HF_HUB))
DEFAULT_IMAGE = "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"
_VOLUME = re.compile(r"^hf://(?:(datasets|models|spaces|buckets)/)?([^/@:\s]+/[^/@:\s]+)"
                     r"(?:@([^/:\s]+))?(/[^:\s]*)?:(/\S*)$")


@attrs.frozen
class HfJobsOptions:
    """``[backend.hf-jobs]`` in ``autolab.toml`` (see ``docs/hf-jobs.md``)."""

    flavor: str = "cpu-basic"
    image: str = DEFAULT_IMAGE
    timeout: float | None = attrs.field(default=7200.0, metadata={"duration": True})
    setup_timeout: float | None = attrs.field(default=900.0, metadata={"duration": True})
    namespace: str | None = None
    secrets: list[str] = attrs.field(factory=list)
    env: dict[str, str] = attrs.field(factory=dict)
    setup: list[str] = attrs.field(factory=list)
    requirements: list[str] = attrs.field(factory=list)
    requirements_txt: bool = True
    python: str = "python"
    code_repo: str | None = None
    endpoint: str | None = None
    volumes: list[str] = attrs.field(factory=list)
    artifacts: bool = True
    keep_code: float | None = attrs.field(default=7 * 86400.0, metadata={"duration": True})
    gpu_metrics: bool = True


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.24.0rc1"`` -> ``(1, 24, 0)``: the leading numeric release parts."""
    parts = []
    for piece in text.split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def hub_problem() -> str | None:
    """Why ``huggingface_hub`` cannot be used here (missing, too old), or None."""
    found = unrelated_autolab()
    if found is not None:
        return (f"the unrelated PyPI package {found!r} is installed and overwrites autolab: "
                "pip uninstall autolab, then pip install --force-reinstall 'autolab-ml[hf]'")
    if importlib.util.find_spec("huggingface_hub") is None:
        return "huggingface_hub is not installed: pip install 'autolab-ml[hf]'"
    version = importlib.metadata.version("huggingface_hub")
    if parse_version(version) < MIN_HF_HUB:
        return (f"huggingface_hub {version} is too old for HF Jobs: autolab needs "
                f">= {MIN_HF_HUB_TEXT} (run_job(name=), list_jobs(labels=, status=)); "
                "pip install -U 'autolab-ml[hf]'")
    return None


def parse_volume(text: str) -> dict[str, object]:
    """``hf://datasets/org/name[@rev][/sub/dir]:/mount`` -> ``Volume`` keyword arguments.

    Repos (models, datasets, spaces) mount read-only; a bucket (``hf://buckets/ns/b:/out``)
    is writable, as the Hub allows.
    """
    match = _VOLUME.match(text.strip())
    if match is None:
        raise ConfigError(f"[backend.hf-jobs] volumes: {text!r} is not "
                          "'hf://datasets/ORG/NAME[@REV][/PATH]:/MOUNT' (or models/, spaces/, "
                          "buckets/)")
    kind, source, revision, path, mount = match.groups()
    volume_type = {"datasets": "dataset", "models": "model", "spaces": "space",
                   "buckets": "bucket", None: "model"}[kind]
    out: dict[str, object] = {"type": volume_type, "source": source, "mount_path": mount,
                              "read_only": volume_type != "bucket"}
    if revision:
        out["revision"] = revision
    if path and path != "/":
        out["path"] = path.strip("/")
    return out

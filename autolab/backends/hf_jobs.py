"""``hf-jobs``: run experiments on Hugging Face Jobs (pay-per-second GPUs and CPUs).

Each experiment becomes one job, labelled with the lab and the experiment id so that a
restarted orchestrator finds it again (``find``, ``reattach``) instead of submitting it twice.
The experiment's commit travels as a ``git bundle`` in a private dataset repo of the lab (see
:mod:`autolab.backends.hf_code`); the token reaches the job only as a job *secret*. Logs are
read from the job's server-sent-event stream by a background thread per running job, so
``logs()`` never blocks. ``estimate_cost`` prices a job at its flavor's rate for its whole time
limit; ``JobState.cost_usd`` reports what it actually ran. ``huggingface_hub`` is imported
lazily. Setup and usage: ``docs/hf-jobs.md``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from autolab.backends import hf_code
from autolab.backends.hf_state import LogFollower, job_state, price_per_hour
from autolab_core import hookimpl
from autolab_core.config import parse_options
from autolab_core.errors import BackendError, ConfigError
from autolab_core.interfaces import JobBackend, PluginContext
from autolab_core.models import JobHandle, JobSpec, JobState, JobStatus, LogChunk

LAB_LABEL = "autolab-lab"
EXPERIMENT_LABEL = "autolab-experiment"
#: Environment variables whose values never go into a job's (readable) environment.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|NONCE", re.IGNORECASE)
_PYTHON = re.compile(r"^python[0-9.]*$")
_ACTIVE = ["SCHEDULING", "RUNNING"]


@attrs.frozen
class HfJobsOptions:
    """``[backend.hf-jobs]`` in ``autolab.toml``."""

    flavor: str = "cpu-basic"
    image: str = "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"
    timeout: float | None = attrs.field(default=7200.0, metadata={"duration": True})
    setup_timeout: float | None = attrs.field(default=900.0, metadata={"duration": True})
    namespace: str | None = None
    secrets: list[str] = attrs.field(factory=list)
    env: dict[str, str] = attrs.field(factory=dict)
    setup: list[str] = attrs.field(factory=lambda: ["pip install --quiet 'autolab[training]'"])
    python: str = "python"
    code_repo: str | None = None
    endpoint: str | None = None


class HfJobsBackend(JobBackend):
    """Hugging Face Jobs, through ``huggingface_hub``'s Jobs API."""

    name = "hf-jobs"
    runs_on_this_machine = False
    queues = True
    description = "Hugging Face Jobs: pay-per-second cloud GPUs (needs `hf auth login`)"

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self.opts = parse_options(HfJobsOptions, options, f"backend.{self.name}")
        if self.opts.flavor.strip() == "":
            raise ConfigError("[backend.hf-jobs] flavor is empty; e.g. flavor = 'a10g-small'")
        self.lab = hf_code.slug(context.lab_name)
        self._api: Any = None
        self._token: str | None = None
        self._namespace: str | None = self.opts.namespace
        self._hardware: dict[str, Any] | None = None
        self._repo_ready = False
        self._followers: dict[str, LogFollower] = {}
        self._final_logs: dict[str, list[str]] = {}
        self._terminal: set[str] = set()

    # -- availability ------------------------------------------------------------------------
    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("huggingface_hub") is None:
            return "huggingface_hub is not installed: pip install 'autolab[hf]'"
        version = importlib.metadata.version("huggingface_hub")
        if int(version.split(".")[0]) < 1:
            return f"huggingface_hub {version} has no Jobs API: pip install -U 'autolab[hf]'"
        return None

    def check(self) -> str | None:
        reason = self.available()
        if reason:
            return reason
        if self._get_token() is None:
            return "no Hugging Face token: run `hf auth login` or set HF_TOKEN"
        try:
            self.namespace()
            flavors = self.hardware()
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 401:
                return ("Hugging Face rejected the token (401): run `hf auth login` again or set "
                        "a valid HF_TOKEN")
            return f"cannot reach Hugging Face Jobs at {self.api().endpoint}: {exc}"
        if self.opts.flavor not in flavors:
            return (f"[backend.hf-jobs] flavor {self.opts.flavor!r} is not offered; choose one "
                    f"of: {', '.join(sorted(flavors))}")
        return None

    # -- plumbing ----------------------------------------------------------------------------
    def _get_token(self) -> str | None:
        if self._token is None:
            from huggingface_hub import get_token

            self._token = get_token()
        return self._token

    def api(self) -> Any:
        """The ``HfApi`` client (created on first use)."""
        if self._api is None:
            reason = self.available()
            if reason:
                raise BackendError(reason)
            from huggingface_hub import HfApi

            token = self._get_token()
            if token is None:
                raise BackendError("hf-jobs: no Hugging Face token: run `hf auth login` or set "
                                   "HF_TOKEN")
            self._api = HfApi(endpoint=self.opts.endpoint, token=token, library_name="autolab")
        return self._api

    def namespace(self) -> str:
        """The user or org that owns the jobs: the option, else whoever the token belongs to."""
        if self._namespace is None:
            self._namespace = self.api().whoami(token=self._get_token(), cache=True)["name"]
        return self._namespace

    def code_repo(self) -> str:
        return self.opts.code_repo or f"{self.namespace()}/autolab-{self.lab}-code"

    def hardware(self) -> dict[str, Any]:
        """Flavor name -> ``JobHardwareInfo``, fetched once per backend instance."""
        if self._hardware is None:
            self._hardware = {hw.name: hw for hw in self.api().list_jobs_hardware()}
        return self._hardware

    def price(self, flavor: str) -> float:
        """USD per hour of ``flavor``; the error lists the flavors on offer."""
        try:
            hardware = self.hardware()
        except Exception as exc:
            raise BackendError(f"hf-jobs: cannot read the hardware price list: {exc}") from exc
        if flavor not in hardware:
            raise BackendError(f"hf-jobs: flavor {flavor!r} is not offered; set [backend.hf-jobs] "
                               f"flavor to one of: {', '.join(sorted(hardware))}")
        return price_per_hour(hardware[flavor])

    def _price_or_none(self, flavor: str) -> float | None:
        try:
            return self.price(flavor)
        except BackendError:
            return None

    def _time_limit(self, spec: JobSpec) -> float | None:
        return spec.time_limit_s or self.opts.timeout

    def _job_timeout(self, spec: JobSpec) -> int | None:
        """The Hub-side limit: the run's limit plus time to pull the image and set up."""
        limit = self._time_limit(spec)
        return None if not limit else math.ceil(limit + (self.opts.setup_timeout or 0))

    # -- cost --------------------------------------------------------------------------------
    def estimate_cost(self, spec: JobSpec) -> float | None:
        """USD for ``spec`` running to its Hub-side limit at the flavor's price."""
        timeout = self._job_timeout(spec)
        if timeout is None:
            raise BackendError("hf-jobs: no time limit, so no cost bound; set [run] time_limit "
                               "or [backend.hf-jobs] timeout")
        return round(self.price(self.opts.flavor) * timeout / 3600.0, 6)

    # -- submitting --------------------------------------------------------------------------
    def _command(self, spec: JobSpec) -> list[str]:
        command = list(spec.command)
        if command and os.path.isabs(command[0]) and (
            command[0] == sys.executable or _PYTHON.match(os.path.basename(command[0]))
        ):
            command[0] = self.opts.python  # the local interpreter's path means nothing there
        return command

    def _env_and_secrets(self, spec: JobSpec) -> tuple[dict[str, str], dict[str, str]]:
        token = self._get_token() or ""
        secrets = {"HF_TOKEN": token}
        for name in self.opts.secrets:
            if name == "HF_TOKEN":
                continue
            if name not in os.environ:
                raise BackendError(f"hf-jobs: secret {name!r} named in [backend.hf-jobs] secrets "
                                   f"is not set here; export {name}=... before `autolab run`")
            secrets[name] = os.environ[name]
        env: dict[str, str] = {}
        for key, value in {**self.opts.env, **spec.env}.items():
            value = str(value)
            if _SECRET_NAME.search(key) or (token and token in value):
                secrets[key] = value  # encrypted on the Hub, never shown by inspect_job
            else:
                env[key] = value
        env["AUTOLAB_EXPERIMENT_ID"] = spec.experiment_id
        if self.opts.endpoint:
            env["HF_ENDPOINT"] = self.opts.endpoint
        return env, secrets

    def _labels(self, spec: JobSpec) -> dict[str, str]:
        labels = {hf_code.slug(k): hf_code.slug(str(v)) for k, v in spec.labels.items()}
        labels.update({LAB_LABEL: self.lab, EXPERIMENT_LABEL: hf_code.slug(spec.experiment_id)})
        return labels

    def _ensure_repo(self) -> None:
        if not self._repo_ready:
            self.api().create_repo(self.code_repo(), repo_type="dataset", private=True,
                                   exist_ok=True)
            self._repo_ready = True

    def submit(self, spec: JobSpec) -> JobHandle:
        try:
            return self._submit(spec)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"hf-jobs: could not submit {spec.experiment_id}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def _submit(self, spec: JobSpec) -> JobHandle:
        api, namespace = self.api(), self.namespace()
        env, secrets = self._env_and_secrets(spec)  # fails on a missing secret before uploading
        ref = None
        if spec.commit is not None:
            self._ensure_repo()
            ref = hf_code.upload_bundle(api, self.code_repo(), spec.workdir, spec.commit,
                                        spec.experiment_id)
        script = hf_code.job_script(
            self._command(spec), setup=self.opts.setup, python=self.opts.python,
            time_limit_s=self._time_limit(spec), code_repo=self.code_repo() if ref else None,
            experiment_id=spec.experiment_id, commit=spec.commit, ref=ref,
            keep_token="HF_TOKEN" in self.opts.secrets,
        )
        info = api.run_job(
            image=self.opts.image, command=["sh", "-c", script], env=env, secrets=secrets,
            flavor=self.opts.flavor, timeout=self._job_timeout(spec), labels=self._labels(spec),
            name=hf_code.slug(f"autolab-{spec.experiment_id}"), namespace=namespace,
        )
        return self._handle(info, spec.experiment_id, self._time_limit(spec))

    def _handle(self, info: Any, experiment_id: str, time_limit_s: float | None) -> JobHandle:
        flavor = str(getattr(info.flavor, "value", info.flavor) or self.opts.flavor)
        return JobHandle(
            backend=self.name, job_id=info.id, experiment_id=experiment_id,
            submitted_at=info.created_at.timestamp() if info.created_at else time.time(),
            data={"namespace": self.namespace(), "flavor": flavor, "time_limit_s": time_limit_s,
                  "url": info.url, "slot": f"hf:{flavor}"},
        )

    # -- watching ----------------------------------------------------------------------------
    def _state(self, info: Any, handle: JobHandle | None = None) -> JobState:
        flavor = str(getattr(info.flavor, "value", info.flavor) or self.opts.flavor)
        limit = handle.data.get("time_limit_s") if handle else None
        state = job_state(info, time_limit_s=limit, price=self._price_or_none(flavor))
        if state.status.terminal:
            self._terminal.add(info.id)
        return state

    def _inspect(self, job_id: str, namespace: str | None = None) -> Any | None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return self.api().inspect_job(job_id=job_id, namespace=namespace or self.namespace())
        except HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise BackendError(f"hf-jobs: cannot inspect job {job_id}: {exc}") from exc

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        """One ``list_jobs`` for this lab's active jobs; ``inspect_job`` for the others."""
        active: dict[str, Any] = {}
        if len(handles) > 1:
            for info in self.api().list_jobs(labels={LAB_LABEL: self.lab}, status=_ACTIVE,
                                             namespace=self.namespace()):
                active[info.id] = info
        states: dict[str, JobState] = {}
        for handle in handles:
            info = active.get(handle.job_id) or self._inspect(
                handle.job_id, handle.data.get("namespace"))
            states[handle.job_id] = (
                JobState(JobStatus.UNKNOWN, reason=f"job {handle.job_id} not found on HF Jobs")
                if info is None else self._state(info, handle)
            )
        return states

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        """Log lines after line ``since``; never waits for a running job.

        While the job runs, a :class:`LogFollower` thread collects its stream. Once a poll (or
        this call) has seen the job end, the log is replayed once, completely, and cached.
        """
        job_id = handle.job_id
        follower = self._followers.get(job_id)
        if follower is None and job_id not in self._terminal and job_id not in self._final_logs:
            self._is_terminal(handle)  # records in self._terminal that it ended
        lines = self._final_logs.get(job_id)
        if lines is None:
            if job_id in self._terminal:
                lines = self._final_logs[job_id] = self._replay(handle)
                if follower is not None:
                    follower.stop()
                    del self._followers[job_id]
                    if len(follower.lines) > len(lines):
                        lines = self._final_logs[job_id] = follower.lines
            else:
                if follower is None or follower.error is not None:
                    follower = LogFollower(self.api(), job_id, self._ns(handle))
                    self._followers[job_id] = follower
                lines = follower.lines
        new = lines[since:]
        return LogChunk("".join(line + "\n" for line in new), since + len(new))

    def _ns(self, handle: JobHandle) -> str:
        return str(handle.data.get("namespace") or self.namespace())

    def _replay(self, handle: JobHandle) -> list[str]:
        """The whole log of a finished job (the stream ends once it is replayed)."""
        try:
            return list(self.api().fetch_job_logs(job_id=handle.job_id, namespace=self._ns(handle),
                                                  follow=False))
        except Exception as exc:
            raise BackendError(f"hf-jobs: cannot read the log of job {handle.job_id}: {exc}") \
                from exc

    def _is_terminal(self, handle: JobHandle) -> bool:
        info = self._inspect(handle.job_id, handle.data.get("namespace"))
        if info is None:  # gone: nothing to read
            self._terminal.add(handle.job_id)
            self._final_logs[handle.job_id] = []
            return True
        return self._state(info, handle).status.terminal

    # -- cancelling --------------------------------------------------------------------------
    def cancel(self, handle: JobHandle) -> None:
        namespace = self._ns(handle)
        info = self._inspect(handle.job_id, namespace)
        if info is None or self._state(info, handle).status.terminal:
            return
        try:
            self.api().cancel_job(job_id=handle.job_id, namespace=namespace)
        except Exception as exc:
            info = self._inspect(handle.job_id, namespace)
            if info is not None and self._state(info, handle).status.terminal:
                return  # it ended meanwhile
            raise BackendError(f"hf-jobs: could not cancel job {handle.job_id}: {exc}") from exc

    def cancel_all(self) -> list[str]:
        """Cancel every scheduling or running job of this lab; return their ids."""
        ids = [info.id for info in self.api().list_jobs(
            labels={LAB_LABEL: self.lab}, status=_ACTIVE, namespace=self.namespace())]
        for job_id in ids:
            self.api().cancel_job(job_id=job_id, namespace=self.namespace())
        return ids

    # -- restarts ----------------------------------------------------------------------------
    def reattach(self, job_id: str) -> JobHandle | None:
        info = self._inspect(job_id)
        if info is None or not info.labels or EXPERIMENT_LABEL not in info.labels:
            return None
        return self._from_info(info)

    def find(self, experiment_id: str) -> JobHandle | None:
        """The newest job of this lab labelled with ``experiment_id``."""
        labels = {LAB_LABEL: self.lab, EXPERIMENT_LABEL: hf_code.slug(experiment_id)}
        infos = list(self.api().list_jobs(labels=labels, namespace=self.namespace()))
        if not infos:
            return None
        newest = max(infos, key=lambda i: i.created_at.timestamp() if i.created_at else 0.0)
        return self._from_info(newest, experiment_id)

    def _from_info(self, info: Any, experiment_id: str | None = None) -> JobHandle:
        env = info.environment or {}
        limit = None
        if info.command and len(info.command) == 3:
            match = re.search(r"exec timeout -k \d+ (\d+) ", info.command[2])
            limit = float(match.group(1)) if match else None
        experiment_id = experiment_id or env.get("AUTOLAB_EXPERIMENT_ID") or \
            info.labels[EXPERIMENT_LABEL]
        return self._handle(info, experiment_id, limit)

    def close(self) -> None:
        for follower in self._followers.values():
            follower.stop()
        self._followers.clear()


@hookimpl
def autolab_register_backends(register: Any) -> None:
    register(HfJobsBackend)

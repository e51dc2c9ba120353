"""``hf-jobs``: run experiments on Hugging Face Jobs (cloud GPUs and CPUs, billed by the minute).

Each experiment becomes one job, labelled with the lab and the experiment id so that a
restarted orchestrator finds it again (``find``, ``reattach``) instead of submitting it twice.
The experiment's tree (no history) and autolab's standard-library job runtime travel as one
archive in a private dataset repo of the lab (:mod:`autolab.backends.hf_code`,
:mod:`autolab.backends.hf_repo`); nothing is installed from a package index but the lab's own
requirements. The token reaches the job only as a job *secret*, and every text the backend
returns (log lines, reasons) is scrubbed of secret values. A job the Hub no longer knows (404
twice) ends as ``LOST``. ``estimate_cost`` prices a job at its flavor (``JobSpec.resources
["flavor"]`` or the lab's) for its whole Hub-side limit, by the minute. ``huggingface_hub`` is
imported lazily. Setup and usage: ``docs/hf-jobs.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autolab.backends import hf_code, hf_repo
from autolab.backends.hf_options import HfJobsOptions, hub_problem, parse_volume
from autolab.backends.hf_state import LogFollower, MetricsFollower, billed_usd, price_per_hour
from autolab.backends.hf_watch import HfWatching
from autolab_core import hookimpl
from autolab_core.errors import BackendError, ConfigError
from autolab_core.interfaces import JobBackend, PluginContext
from autolab_core.models import JobHandle, JobSpec, JobState
from autolab_core.secrets import looks_secret, scrub, secret_values

LAB_LABEL = "autolab-lab"
EXPERIMENT_LABEL = "autolab-experiment"
_PYTHON = re.compile(r"^python[0-9.]*$")
_ACTIVE = ["SCHEDULING", "RUNNING"]
__all__ = ["EXPERIMENT_LABEL", "LAB_LABEL", "HfJobsBackend", "HfJobsOptions"]


class HfJobsBackend(HfWatching, JobBackend):
    """Hugging Face Jobs, through ``huggingface_hub``'s Jobs API."""

    name = "hf-jobs"
    runs_on_this_machine = False
    queues = True
    description = "Hugging Face Jobs: cloud GPUs billed by the minute (needs `hf auth login`)"
    options_class = HfJobsOptions
    opts: HfJobsOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        if self.opts.flavor.strip() == "":
            raise ConfigError("[backend.hf-jobs] flavor is empty; e.g. flavor = 'a10g-small'")
        self.volumes = [parse_volume(v) for v in self.opts.volumes]
        self.lab = hf_code.slug(context.lab_name)
        self._api: Any = None
        self._token: str | None = None
        self._namespace: str | None = self.opts.namespace
        self._hardware: dict[str, Any] | None = None
        self._repo_ready = False
        self._followers: dict[str, LogFollower] = {}
        self._metrics: dict[str, MetricsFollower] = {}
        self._final_logs: dict[str, list[str]] = {}
        self._terminal: set[str] = set()
        self._missing: dict[str, int] = {}
        self._metrics_sent: dict[str, int] = {}

    # -- availability ------------------------------------------------------------------------
    @classmethod
    def available(cls) -> str | None:
        return hub_problem()

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
            return self.scrub(f"cannot reach Hugging Face Jobs at {self.api().endpoint}: {exc}")
        if self.opts.flavor not in flavors:
            return (f"[backend.hf-jobs] flavor {self.opts.flavor!r} is not offered; choose one "
                    f"of: {', '.join(sorted(flavors))}")
        try:
            return hf_repo.public_problem(self.api(), self.code_repo())
        except Exception as exc:
            return self.scrub(f"cannot read the code repo {self.code_repo()}: {exc}")

    # -- plumbing ----------------------------------------------------------------------------
    def _get_token(self) -> str | None:
        if self._token is None:
            from huggingface_hub import get_token

            self._token = get_token()
        return self._token

    def secrets(self) -> list[str]:
        """Every secret value this backend handles: the token, the named job secrets and the
        secret-looking variables of this process."""
        named = [os.environ[n] for n in self.opts.secrets if n in os.environ]
        return secret_values(also=[v for v in (self._token, *named) if v])

    def scrub(self, text: str) -> str:
        """``text`` without any secret value (before it is returned, logged or stored)."""
        return scrub(text, self.secrets())

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
            raise BackendError(self.scrub(f"hf-jobs: cannot read the hardware price list: {exc}")) \
                from exc
        if flavor not in hardware:
            raise BackendError(f"hf-jobs: flavor {flavor!r} is not offered; set [backend.hf-jobs] "
                               f"flavor (or the experiment's resources) to one of: "
                               f"{', '.join(sorted(hardware))}")
        return price_per_hour(hardware[flavor])

    def _price_or_none(self, flavor: str) -> float | None:
        try:
            return self.price(flavor)
        except BackendError:
            return None

    def flavor(self, spec: JobSpec) -> str:
        """The experiment's flavor (``resources["flavor"]``), else the lab's default."""
        return str(spec.resources.get("flavor") or self.opts.flavor)

    def _time_limit(self, spec: JobSpec) -> float | None:
        return spec.time_limit_s or self.opts.timeout

    def _job_timeout(self, spec: JobSpec) -> int | None:
        """The Hub-side limit: the run's limit plus time to pull the image and set up."""
        limit = self._time_limit(spec)
        return None if not limit else math.ceil(limit + (self.opts.setup_timeout or 0))

    # -- cost --------------------------------------------------------------------------------
    def estimate_cost(self, spec: JobSpec) -> float | None:
        """USD for ``spec`` running to its Hub-side limit at its flavor's price, by the minute."""
        timeout = self._job_timeout(spec)
        if timeout is None:
            raise BackendError("hf-jobs: no time limit, so no cost bound; set [run] time_limit "
                               "or [backend.hf-jobs] timeout")
        return billed_usd(self.price(self.flavor(spec)), timeout)

    # -- submitting --------------------------------------------------------------------------
    def _command(self, spec: JobSpec) -> list[str]:
        command = list(spec.command)
        if command and os.path.isabs(command[0]) and (
            command[0] == sys.executable or _PYTHON.match(os.path.basename(command[0]))
        ):
            command[0] = self.opts.python  # the local interpreter's path means nothing there
        return command

    @staticmethod
    def _train_argv(spec: JobSpec) -> list[str]:
        """The lab's training command: from the runner's spec, else the job's command."""
        try:
            return [str(a) for a in json.loads(spec.env.get("AUTOLAB_RUN_SPEC", "{}"))["train"]]
        except (KeyError, TypeError, ValueError):
            return list(spec.command)

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
            if looks_secret(key) or "NONCE" in key.upper() or (token and token in value):
                secrets[key] = value  # encrypted on the Hub, never shown by inspect_job
            else:
                env[key] = value
        env["AUTOLAB_EXPERIMENT_ID"] = spec.experiment_id
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.opts.endpoint:
            env["HF_ENDPOINT"] = self.opts.endpoint
        return env, secrets

    def _labels(self, spec: JobSpec) -> dict[str, str]:
        labels = {hf_code.slug(k): hf_code.slug(str(v)) for k, v in spec.labels.items()}
        labels.update({LAB_LABEL: self.lab, EXPERIMENT_LABEL: hf_code.slug(spec.experiment_id)})
        return labels

    def _ensure_repo(self) -> None:
        if not self._repo_ready:
            hf_repo.ensure_private(self.api(), self.code_repo())
            self._repo_ready = True

    def submit(self, spec: JobSpec) -> JobHandle:
        try:
            return self._submit(spec)
        except BackendError as exc:
            raise BackendError(self.scrub(str(exc))) from exc
        except Exception as exc:
            raise BackendError(self.scrub(f"hf-jobs: could not submit {spec.experiment_id}: "
                                          f"{type(exc).__name__}: {exc}")) from exc

    def _submit(self, spec: JobSpec) -> JobHandle:
        from huggingface_hub import Volume

        api, namespace, flavor = self.api(), self.namespace(), self.flavor(spec)
        self.price(flavor)  # an unknown flavor fails here, naming the ones on offer
        env, secrets = self._env_and_secrets(spec)  # fails on a missing secret before uploading
        # [run] requirements (the lab's, in every spec) plus this backend's own option
        requirements = list(dict.fromkeys([*spec.requirements, *self.opts.requirements]))
        revision = None
        if spec.commit is not None:
            # The loop's workdir is an exported tree (no .git): the commit is in the lab's repo.
            repo = spec.workdir if (Path(spec.workdir) / ".git").exists() \
                else str(self.context.lab_root)
            requirements += hf_code.inline_requirements(repo, spec.commit, self._train_argv(spec))
            self._ensure_repo()
            revision = hf_code.upload_code(api, self.code_repo(), repo, spec.commit,
                                           spec.experiment_id)
        script = hf_code.job_script(
            self._command(spec), setup=self.opts.setup, python=self.opts.python,
            time_limit_s=self._time_limit(spec), endpoint=api.endpoint,
            code_repo=self.code_repo() if revision else None, experiment_id=spec.experiment_id,
            revision=revision or "main", commit=spec.commit, requirements=requirements,
            install_requirements_txt=self.opts.requirements_txt, artifacts=self.opts.artifacts,
            keep_token="HF_TOKEN" in self.opts.secrets,
        )
        info = api.run_job(
            image=self.opts.image, command=["sh", "-c", script], env=env, secrets=secrets,
            flavor=flavor, timeout=self._job_timeout(spec), labels=self._labels(spec),
            name=hf_code.slug(f"autolab-{spec.experiment_id}"), namespace=namespace,
            volumes=[Volume(**v) for v in self.volumes] or None,
        )
        return self._handle(info, spec.experiment_id, self._time_limit(spec),
                            with_code=revision is not None)

    def _handle(self, info: Any, experiment_id: str, time_limit_s: float | None,
                with_code: bool = False) -> JobHandle:
        flavor = str(getattr(info.flavor, "value", info.flavor) or self.opts.flavor)
        data: dict[str, Any] = {"namespace": self.namespace(), "flavor": flavor,
                                "time_limit_s": time_limit_s, "url": info.url,
                                "slot": f"hf:{flavor}"}
        if with_code and self.opts.artifacts:
            data["artifacts"] = (f"{self.api().endpoint}/datasets/{self.code_repo()}/tree/main/"
                                 f"{hf_code.artifacts_path(experiment_id)}")
        return JobHandle(
            backend=self.name, job_id=info.id, experiment_id=experiment_id,
            submitted_at=info.created_at.timestamp() if info.created_at else time.time(),
            data=data,
        )

    # -- watching ----------------------------------------------------------------------------
    def _inspect(self, job_id: str, namespace: str | None = None) -> Any | None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return self.api().inspect_job(job_id=job_id, namespace=namespace or self.namespace())
        except HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise BackendError(self.scrub(f"hf-jobs: cannot inspect job {job_id}: {exc}")) \
                from exc

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
            if info is None:
                states[handle.job_id] = self._missing_state(handle.job_id)
                continue
            self._missing.pop(handle.job_id, None)
            states[handle.job_id] = self._state(info, handle)
        return states

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
            raise BackendError(self.scrub(f"hf-jobs: could not cancel job {handle.job_id}: {exc}")) \
                from exc

    def cancel_all(self) -> list[str]:
        """Cancel every scheduling or running job of this lab; return their ids."""
        ids = [info.id for info in self.api().list_jobs(
            labels={LAB_LABEL: self.lab}, status=_ACTIVE, namespace=self.namespace())]
        for job_id in ids:
            self.api().cancel_job(job_id=job_id, namespace=self.namespace())
        return ids

    # -- the code repo -----------------------------------------------------------------------
    def clean_code(self, older_than_s: float | None = None, *, orphans: bool = False) -> list[str]:
        """Delete code archives of experiments whose jobs ended ``older_than_s`` ago (default:
        ``keep_code``); ``orphans`` also deletes archives that no job of this lab refers to."""
        keep = self.opts.keep_code if older_than_s is None else older_than_s
        if keep is None:
            return []
        jobs = self.api().list_jobs(labels={LAB_LABEL: self.lab}, namespace=self.namespace())
        return hf_repo.clean(self.api(), self.code_repo(), jobs, EXPERIMENT_LABEL, keep,
                             orphans=orphans)

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
            match = re.search(r"timeout -k \d+ (\d+) ", info.command[2])
            limit = float(match.group(1)) if match else None
        experiment_id = experiment_id or env.get("AUTOLAB_EXPERIMENT_ID") or \
            info.labels[EXPERIMENT_LABEL]
        with_code = bool(info.command and hf_code.RUNTIME_DIR in info.command[-1])
        return self._handle(info, experiment_id, limit, with_code=with_code)

    def close(self) -> None:
        for follower in [*self._followers.values(), *self._metrics.values()]:
            follower.stop()
        self._followers.clear()
        self._metrics.clear()
        if self._repo_ready:
            self.cleanup()


@hookimpl
def autolab_register_backends(register: Any) -> None:
    register(HfJobsBackend)

"""Keep jobs away from the lab's git, and the lab's refs and evaluation where autolab put them.

- :func:`export_tree`: a job's checkout is an exported tree of its commit (``git archive``, no
  ``.git``), so a job has no repository to move ``main`` in.
- :class:`MainGuard`: remembers the commit autolab last wrote to ``main`` and to each
  experiment branch; any other move raises :class:`TamperAlert` naming the commit.
- :class:`Pins`: the protected files and the ``[files] protected_data`` globs, pinned by hash
  when the lab is initialised and verified before every scoring.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolab_core.errors import LabError
from autolab_core.hashing import expand_globs, hash_globs
from autolab_core.job import RunSpec, derive_run_key

if TYPE_CHECKING:
    from autolab_core.lab import Lab

JOURNAL = "refs-written.log"
PINS = "pins.json"
RESULT_KEY = "result-key"


class TamperAlert(LabError):
    """A ref moved without autolab: ``ref`` is at ``actual`` instead of ``expected``."""

    def __init__(self, ref: str, expected: str | None, actual: str | None) -> None:
        self.ref, self.expected, self.actual = ref, expected, actual
        super().__init__(
            f"ALERT: {ref} was moved outside autolab: it is at {actual or '(deleted)'}, autolab "
            f"last wrote {expected or '(nothing: the ref is new)'}. The run stops here. Inspect "
            f"that commit (`git show {actual}`) and reset the ref with `git update-ref {ref} "
            f"{expected}` if it is not yours." if expected else
            f"ALERT: {ref} was created outside autolab at {actual}. The run stops here; delete it "
            f"with `git update-ref -d {ref}` if it is not yours.")


def export_tree(lab: Lab, commit: str, dest: Path, data_globs: Sequence[str] = ()) -> Path:
    """Write ``commit``'s files (no ``.git``) to ``dest`` and copy the lab's files matching
    ``data_globs`` (evaluation data that git may not track) next to them."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    proc = subprocess.Popen(["git", "-C", str(lab.root), "archive", "--format=tar", commit],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(dest, filter="data")
        while proc.stdout.read(65536):  # the archive's zero padding: else git dies of SIGPIPE
            pass
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.wait() != 0:
            shutil.rmtree(dest, ignore_errors=True)
            raise LabError(f"cannot export {commit} from {lab.root}: {err.strip()}")
    for rel in expand_globs(lab.root, list(data_globs)):
        target = dest / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lab.root / rel, target)
    return dest


class MainGuard:
    """The refs autolab wrote. Attach with ``lab.guard = MainGuard(lab)``: every ref write of
    that :class:`Lab` is then checked against and recorded here, and :meth:`check` finds any
    other move of ``main`` or of an experiment branch."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.expected: dict[str, str] = self.refs()  # trusted as found when the session starts

    def refs(self) -> dict[str, str]:
        """``main`` and every experiment branch, as they are now."""
        from autolab_core.lab import BRANCH_PREFIX, MAIN

        out = self.lab._git("for-each-ref", "--format=%(refname) %(objectname)",
                            f"refs/heads/{MAIN}",
                            f"refs/heads/{BRANCH_PREFIX.rsplit('/', 1)[0]}")
        pairs = (line.split() for line in out.splitlines() if line.strip())
        return {ref: sha for ref, sha in pairs if ref == f"refs/heads/{MAIN}"
                or ref.startswith(f"refs/heads/{BRANCH_PREFIX}")}

    def _written_elsewhere(self, ref: str, commit: str) -> bool:
        path = self.lab.state_dir / JOURNAL
        return path.exists() and f"{ref} {commit}" in path.read_text().splitlines()

    def verify(self, ref: str, actual: str | None) -> None:
        """Raise :class:`TamperAlert` when ``ref`` at ``actual`` is not what autolab wrote."""
        expected = self.expected.get(ref)
        if actual == expected:
            return
        if actual is not None and self._written_elsewhere(ref, actual):
            self.expected[ref] = actual  # another autolab process (e.g. `autolab approve`)
            return
        raise TamperAlert(ref, expected, actual)

    def check(self, restore: bool = True) -> None:
        """Verify ``main`` and every experiment branch (call once per loop tick). With
        ``restore``, a moved ref is put back where autolab left it (the unexpected commit is
        kept under ``refs/autolab/tampered/``) before the alert is raised."""
        now = self.refs()
        for ref in sorted(set(now) | set(self.expected)):
            try:
                self.verify(ref, now.get(ref))
            except TamperAlert as alert:
                if restore:
                    self._restore(alert)
                raise

    def _restore(self, alert: TamperAlert) -> None:
        ref, expected, actual = alert.ref, alert.expected, alert.actual
        if actual is not None:
            keep = f"refs/autolab/tampered/{ref.removeprefix('refs/heads/')}-{actual[:12]}"
            self.lab._git("update-ref", keep, actual)
        if expected is None:
            self.lab._git("update-ref", "-d", ref, actual or "")
        else:
            self.lab._git("update-ref", ref, expected, actual or "0" * 40)
        alert.args = (f"{alert.args[0]} autolab has put {ref} back to "
                      f"{expected or '(deleted)'}; the other commit is kept as {keep if actual else '-'}.",)


class Pins:
    """Hashes of the protected files (at ``main``) and of the protected data (in the lab's
    checkout), kept in ``.autolab/pins.json``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.path = lab.state_dir / PINS

    def current(self) -> dict[str, Any]:
        files = self.lab.config.files
        commit = self.lab.main_commit()
        protected = {p: hashlib.sha256(self.lab.read_bytes(commit, p) or b"").hexdigest()
                     for p in files.protected}
        data = {p: hashlib.sha256((self.lab.root / p).read_bytes()).hexdigest()
                for p in expand_globs(self.lab.root, list(files.protected_data))}
        return {"protected": protected, "protected_data": data,
                "protected_data_globs": list(files.protected_data)}

    def pin(self) -> dict[str, Any]:
        """Record the current hashes (at lab init, or after a deliberate evaluation change)."""
        pins = self.current()
        self.path.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return pins

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return self.pin()
        data = json.loads(self.path.read_text())
        assert isinstance(data, dict)
        return data

    def data_hash(self) -> str | None:
        """The protected data's hash as the runner computes it (``hash_globs``), after checking
        it against the pins; None when the lab declares no protected data."""
        self.verify()
        globs = list(self.lab.config.files.protected_data)
        return hash_globs(self.lab.root, globs) if globs else None

    def verify(self) -> None:
        """Raise LabError naming every protected file or data file that changed since pinned."""
        pinned, now = self.load(), self.current()
        changed = []
        for kind in ("protected", "protected_data"):
            old, new = pinned.get(kind, {}), now[kind]
            changed += [f"{p} ({'changed' if p in new else 'missing'})"
                        for p in sorted(old) if old[p] != new.get(p)]
            changed += [f"{p} (new)" for p in sorted(set(new) - set(old))]
        if changed:
            raise LabError(
                f"protected evaluation files changed since they were pinned: {', '.join(changed)}. "
                "If you changed the evaluation on purpose, re-pin with `Pins(lab).pin()` "
                f"(delete {self.path} and run `autolab init` again); otherwise restore them")


def result_master_key(lab: Lab) -> bytes:
    """The lab's master result key, ``.autolab/result-key`` (mode 0600), created on first use.
    Jobs never see it: sandboxed jobs get the lab root hidden (``RunSpec.hide``); without a
    sandbox a job running as the same user could read it (see docs/trust.md)."""
    path = lab.state_dir / RESULT_KEY
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def run_key(lab: Lab, experiment_id: str, attempt: int) -> bytes:
    """The key for one attempt: what the backend hands the runner on its key pipe / stdin, and
    what :func:`autolab_core.job.parse_result` checks the result line with."""
    return derive_run_key(result_master_key(lab), experiment_id, attempt)


def run_spec(lab: Lab, experiment_id: str, base_commit: str, seed: int, attempt: int,
             isolation: str = "auto", network: bool = True) -> RunSpec:
    """The :class:`RunSpec` of one run of this lab: the commands, the evaluation hash on
    ``base_commit``, the pinned data hash (checked against the pins first), the lab root
    hidden from the job."""
    cfg = lab.config
    return RunSpec(
        experiment_id=experiment_id, train=list(cfg.run.argv()),
        eval=list(cfg.run.eval_argv() or []) or None, metric=cfg.metric.name,
        protected=list(cfg.files.protected),
        eval_hash=lab.files_hash(base_commit, cfg.files.protected),
        protected_data=list(cfg.files.protected_data),
        protected_data_hash=Pins(lab).data_hash(), pattern=cfg.metric.pattern,
        results_file=cfg.metric.results_file, seed_env=cfg.run.seed_env, seed=seed,
        attempt=attempt, env=dict(cfg.run.env), isolation=isolation, network=network,
        hide=[str(lab.root)])

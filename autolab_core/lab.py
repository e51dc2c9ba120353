"""The lab's state in git: ``main``, experiment branches, and the records of every experiment.

Layout of a lab repository:

- ``main`` holds the current best code, ``autolab.toml`` and ``lab-records/``: ``scores.tsv``
  (one line per experiment, diffs well) and ``experiments/<id>.json`` (the full record, from
  hypothesis to result), plus ``conversations/<id>.json`` for LLM provenance.
- ``autolab/exp-<id>`` branches: exactly one commit on top of the ``main`` commit the
  experiment started from.
- ``.autolab/`` (git-ignored) is the state directory: live experiment records, job handles,
  the metric store, worktrees. Together with git it is everything needed to resume.

Every write to a ref is a compare-and-swap (``git update-ref <ref> <new> <old>``) built with
plumbing in a private index, under an exclusive file lock, so several processes can write at
once without losing a commit and without touching the user's checkout (which is fast-forwarded
afterwards when it is on ``main`` and clean).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import git
from gitdb.base import IStream  # type: ignore[import-untyped]

from autolab_core.atomic import write_atomic
from autolab_core.config import CONFIG_FILE, Config, load_config
from autolab_core.config_template import DEFAULT_CONFIG
from autolab_core.errors import LabError
from autolab_core.hashing import content_hash
from autolab_core.models import Experiment, id_key, to_dict
from autolab_core.scores import format_scores, parse_scores, score_row

if TYPE_CHECKING:
    from autolab_core.guard import MainGuard

MAIN = "main"
BRANCH_PREFIX = "autolab/exp-"
RECORDS = "lab-records"
STATE_DIR = ".autolab"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "autolab",
    "GIT_AUTHOR_EMAIL": "autolab@localhost",
    "GIT_COMMITTER_NAME": "autolab",
    "GIT_COMMITTER_EMAIL": "autolab@localhost",
}


class Lab:
    """A lab repository. Cheap to construct; safe to use from several processes."""

    def __init__(self, root: Path | str) -> None:
        try:
            self.repo = git.Repo(Path(root), search_parent_directories=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise LabError(f"{root} is not a git repository; run `autolab init {root}`") from None
        assert self.repo.working_tree_dir is not None
        self.root = Path(self.repo.working_tree_dir).resolve()
        self.state_dir = self.root / STATE_DIR
        self.state_dir.mkdir(exist_ok=True)
        self._config: Config | None = None
        #: Set to a :class:`autolab_core.guard.MainGuard` to check and record every ref write.
        self.guard: MainGuard | None = None

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def init(cls, root: Path | str, config_text: str | None = None) -> Lab:
        """Make ``root`` a lab: a git repo on ``main`` with ``autolab.toml``, committed.

        An existing repository keeps its history; ``main`` is created from its current HEAD.
        """
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        try:
            repo = git.Repo(root)
        except git.InvalidGitRepositoryError:
            repo = git.Repo.init(root, initial_branch=MAIN)
        config_path = root / CONFIG_FILE
        if not config_path.exists():
            config_path.write_text(config_text or DEFAULT_CONFIG)
        load_config(root)  # fail early, naming the bad key
        ignore = root / ".gitignore"
        lines = ignore.read_text().splitlines() if ignore.exists() else []
        if f"/{STATE_DIR}/" not in lines:
            ignore.write_text("\n".join([*lines, f"/{STATE_DIR}/", "__pycache__/", "out/"]) + "\n")
        env = {**os.environ, **_identity(repo)}
        repo.git.add("--all", env=env)
        if repo.is_dirty(index=True, untracked_files=False) or not repo.head.is_valid():
            repo.git.commit("-m", "autolab: initialise lab", "--allow-empty", env=env)
        on_main = not repo.head.is_detached and repo.active_branch.name == MAIN
        if not on_main:
            if MAIN not in repo.heads:
                repo.git.branch(MAIN, env=env)
            repo.git.checkout(MAIN, env=env)
        lab = cls(root)
        from autolab_core.guard import Pins

        pins = Pins(lab)
        if not pins.path.exists():
            pins.pin()  # the evaluation as it is now is the one every scoring is checked against
        return lab

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.root)
        return self._config

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, name: str, what: str) -> Iterator[None]:
        """A lock that fails at once, naming ``what`` holds it, instead of waiting."""
        path = self.state_dir / f"{name}.lock"
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.with_suffix(".pid")
                pid = holder.read_text().strip() if holder.exists() else "?"
                raise LabError(f"{what} is already running on {self.root} (pid {pid})") from None
            path.with_suffix(".pid").write_text(str(os.getpid()))
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lock(self, name: str = "git") -> Iterator[None]:
        """An exclusive lock shared by every process working on this lab."""
        path = self.state_dir / f"{name}.lock"
        with open(path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading -----------------------------------------------------------------------------
    def _git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        full_env = {**os.environ, **_identity(self.repo), **(env or {})}
        return str(self.repo.git.execute(["git", *args], env=full_env))

    def rev(self, ref: str) -> str:
        try:
            return self._git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        except git.GitCommandError:
            raise LabError(f"no commit {ref!r} in {self.root}") from None

    def main_commit(self) -> str:
        # Read the loose ref directly (the run loop asks often); fall back to git.
        ref = Path(self.repo.git_dir) / "refs" / "heads" / MAIN
        try:
            sha = ref.read_text().strip()
        except OSError:
            sha = ""
        return sha if len(sha) == 40 else self.rev(f"refs/heads/{MAIN}")

    def read(self, commit: str, path: str) -> str | None:
        """The text of ``path`` at ``commit``, or None when it does not exist there."""
        data = self.read_bytes(commit, path)
        return None if data is None else data.decode()

    def read_bytes(self, commit: str, path: str) -> bytes | None:
        # A fresh `git cat-file` per call: GitPython's persistent one is not thread-safe.
        try:
            data = self.repo.git.execute(
                ["git", "cat-file", "blob", f"{commit}:{path}"], stdout_as_string=False,
                strip_newline_in_stdout=False,
            )
        except git.GitCommandError:
            return None
        return bytes(data)

    def files_at(self, commit: str, paths: Sequence[str]) -> dict[str, str]:
        """Contents of ``paths`` at ``commit`` (missing files are left out)."""
        out = {}
        for path in paths:
            data = self.read_bytes(commit, path)
            if data is not None:
                out[path] = data.decode()
        return out

    def files_hash(self, commit: str, paths: Sequence[str]) -> str:
        """:func:`content_hash` of ``paths`` at ``commit`` (the eval hash, the code hash)."""
        return content_hash({p: self.read_bytes(commit, p) or b"" for p in paths})

    def tree_of(self, commit: str) -> str:
        return self._git("rev-parse", f"{commit}^{{tree}}").strip()

    def diff(self, a: str, b: str) -> str:
        return self._git("diff", a, b)

    def branch_exists(self, branch: str) -> bool:
        return bool(self._git("for-each-ref", f"refs/heads/{branch}").strip())

    # -- writing -----------------------------------------------------------------------------
    def _commit_files(
        self, parent: str, files: Mapping[str, str | bytes | None], message: str
    ) -> str:
        """A commit on ``parent`` with ``files`` written (None deletes); no ref moves."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", parent, env=env)
            for path, data in files.items():
                if data is None:
                    self._git("update-index", "--force-remove", path, env=env)
                    continue
                raw = data.encode() if isinstance(data, str) else data
                sha = self.repo.odb.store(IStream(b"blob", len(raw), io.BytesIO(raw))).hexsha
                sha = sha.decode() if isinstance(sha, bytes) else sha
                self._git("update-index", "--add", "--cacheinfo", f"100644,{sha},{path}", env=env)
            tree = self._git("write-tree", env=env).strip()
        return self._git("commit-tree", tree, "-p", parent, "-m", message).strip()

    def _cas(self, ref: str, new: str, old: str | None) -> bool:
        """Move ``ref`` from ``old`` (None: must not exist) to ``new``; False if it moved.
        With a guard, ``old`` must be what autolab last wrote (else TamperAlert)."""
        if self.guard is not None:
            self.guard.verify(ref, old)
        try:
            self._git("update-ref", ref, new, old if old is not None else "0" * 40)
        except git.GitCommandError:
            return False
        with open(self.state_dir / "refs-written.log", "a") as fh:  # what MainGuard trusts
            fh.write(f"{ref} {new}\n")
        if self.guard is not None:
            self.guard.expected[ref] = new
        return True

    def create_branch(
        self, branch: str, base: str, files: Mapping[str, str | None], message: str
    ) -> str:
        """Create ``branch`` with exactly one commit on ``base``; error if it exists."""
        commit = self._commit_files(base, files, message)
        if not self._cas(f"refs/heads/{branch}", commit, None):
            raise LabError(f"branch {branch} already exists; experiment ids must be unique")
        return commit

    def rebase_branch(
        self, branch: str, base: str, files: Mapping[str, str | None], message: str
    ) -> str:
        """Replace ``branch``'s one commit with ``files`` on a newer ``base``."""
        old = self.rev(f"refs/heads/{branch}")
        commit = self._commit_files(base, files, message)
        if not self._cas(f"refs/heads/{branch}", commit, old):
            raise LabError(f"branch {branch} moved while it was being rebased")
        return commit

    def update_main(
        self,
        files: Mapping[str, str | bytes | None],
        message: str,
        expect_code: tuple[Sequence[str], str] | None = None,
    ) -> str:
        """Commit ``files`` on top of the current ``main`` (retrying if another writer won).

        With ``expect_code=(paths, hash)``, refuse (LabError) when main's ``paths`` no longer
        hash to ``hash``: the change was made against code that has since moved on.
        """
        with self.lock():
            for _ in range(20):
                old = self.main_commit()
                if expect_code is not None:
                    paths, want = expect_code
                    if self.files_hash(old, paths) != want:
                        raise LabError("main's code changed since this change was based on it")
                new = self._commit_files(old, files, message)
                if self._cas(f"refs/heads/{MAIN}", new, old):
                    self._sync_checkout(old, new)
                    return new
            raise LabError("could not update main: too many concurrent writers")

    def _sync_checkout(self, old: str, new: str) -> None:
        """Fast-forward the user's checkout when it is on main and ``old`` was checked out."""
        try:
            head = self._git("symbolic-ref", "-q", "HEAD").strip()
        except git.GitCommandError:
            return
        if head != f"refs/heads/{MAIN}":
            return
        with contextlib.suppress(git.GitCommandError):
            # Two-tree merge: updates only files that differ, fails if the user edited them.
            self._git("read-tree", "-m", "-u", old, new)

    # -- job checkouts ------------------------------------------------------------------------
    def export_tree(self, commit: str, dest: Path) -> Path:
        """A job's checkout: ``commit``'s files without ``.git`` (so a job cannot move refs),
        plus the ``[files] protected_data`` files of the lab's checkout."""
        from autolab_core.guard import export_tree

        return export_tree(self, commit, dest, self.config.files.protected_data)

    def add_worktree(self, path: Path, commit: str) -> Path:
        with self.lock():
            if path.exists():
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._git("worktree", "add", "--detach", str(path), commit)
            except git.GitCommandError:
                # A registration whose folder was deleted (with .autolab/) blocks the path.
                self._git("worktree", "prune")
                self._git("worktree", "add", "--detach", str(path), commit)
        return path

    def remove_worktree(self, path: Path) -> None:
        with self.lock(), contextlib.suppress(git.GitCommandError):
            self._git("worktree", "remove", "--force", str(path))

    # -- experiment records ------------------------------------------------------------------
    @property
    def experiments_dir(self) -> Path:
        return self.state_dir / "experiments"

    def save_experiment(self, experiment: Experiment) -> None:
        """Write the live record to the state directory (atomic)."""
        self.experiments_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.experiments_dir / f"{experiment.id}.json",
            json.dumps(to_dict(experiment), indent=1, sort_keys=True),
        )

    def load_experiments(self) -> list[Experiment]:
        """Every experiment record in the state directory, oldest first."""
        out = [Experiment.from_dict(json.loads(path.read_text()))
               for path in self.experiments_dir.glob("*.json")]
        return sorted(out, key=lambda e: id_key(e.id))

    def new_experiment_id(self) -> str:
        """The next free id (``0001``, ``0002``...), reserved atomically."""
        with self.lock("ids"):
            counter = self.state_dir / "next-id"
            n = int(counter.read_text()) if counter.exists() else 1
            while self.branch_exists(f"{BRANCH_PREFIX}{n:04d}") or (
                self.experiments_dir / f"{n:04d}.json"
            ).exists():
                n += 1
            counter.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(counter, str(n + 1))
        return f"{n:04d}"

    def record_on_main(
        self,
        experiments: Sequence[Experiment],
        message: str,
        extra_files: Mapping[str, str | None] | None = None,
        expect_code: tuple[Sequence[str], str] | None = None,
    ) -> str:
        """Commit the scores table and these experiments' records to ``main``.

        ``extra_files`` go in the same commit (a promotion's code change, conversations).
        """
        with self.lock("records"):
            scores = self._scores_rows()
            for exp in experiments:
                scores[exp.id] = score_row(exp)
            files: dict[str, str | None] = {
                f"{RECORDS}/scores.tsv": format_scores(scores.values()),
            }
            for exp in experiments:
                files[f"{RECORDS}/experiments/{exp.id}.json"] = (
                    json.dumps(to_dict(exp), indent=1, sort_keys=True) + "\n"
                )
            files.update(extra_files or {})
            return self.update_main(files, message, expect_code=expect_code)

    def _scores_rows(self) -> dict[str, dict[str, str]]:
        text = self.read(self.main_commit(), f"{RECORDS}/scores.tsv")
        return {row["id"]: row for row in parse_scores(text or "")}

    def scores(self) -> list[dict[str, str]]:
        """The scores table on main, one dict per experiment."""
        return list(self._scores_rows().values())


def _identity(repo: git.Repo) -> dict[str, str]:
    """Commit as autolab unless the user configured an identity."""
    reader = repo.config_reader()
    if reader.has_option("user", "name") and reader.has_option("user", "email"):
        return {}
    return dict(_IDENTITY)

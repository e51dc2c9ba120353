"""Run lab code in the strongest sandbox this machine allows, detected at startup.

Standard library only (the runner uses it inside jobs). Levels, strongest first:

- ``bwrap`` (bubblewrap, needs unprivileged user namespaces): the whole file system read-only,
  the job's output directory writable, the paths in ``hide`` replaced by empty ones, a new PID
  namespace (so the job sees neither the runner nor anything outside, and every process it
  started dies with it), a new session, and optionally no network.
- ``landlock`` (Linux >= 5.13, no privileges, via ``ctypes`` syscalls): writes only to the
  output directory (and ``/dev``), reads everywhere except the hidden paths, and with Landlock
  ABI >= 4 optionally no TCP.
- ``none``: nothing; the runner's hash checks and process clean-up still catch tampering.

:func:`detect` probes once per process; :func:`wrap` turns a command into a sandboxed one;
:func:`kill_job` kills and reaps everything a job started (the runner is a child subreaper).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

LEVELS = ("bwrap", "landlock", "none")

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every arch.
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV


@dataclass(frozen=True)
class Policy:
    """What lab code may do: read ``root`` (and the system), write only ``writable``, never see
    ``hide`` (files or directories) except the directories in ``reveal`` (read-only: e.g. a
    virtual environment inside the hidden lab), reach the network only when ``network``, and
    never change the files in ``readonly`` even inside a writable directory (bubblewrap; under
    Landlock the runner's hash checks catch such a change)."""

    root: Path
    writable: Sequence[Path]
    hide: Sequence[Path] = field(default_factory=tuple)
    network: bool = True
    reveal: Sequence[Path] = field(default_factory=tuple)
    readonly: Sequence[Path] = field(default_factory=tuple)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    try:
        abi = int(_libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    except (OSError, AttributeError):
        return 0
    return max(abi, 0)


def _bwrap_works(bwrap: str) -> bool:
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc",
             "--unshare-pid", "--die-with-parent", "--", "true"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@cache
def available() -> tuple[str, ...]:
    """The levels this machine allows, strongest first (always ends with ``none``)."""
    found = []
    bwrap = shutil.which("bwrap")
    if bwrap and _bwrap_works(bwrap):
        found.append("bwrap")
    if landlock_abi() >= 1:
        found.append("landlock")
    return (*found, "none")


def detect(requested: str = "auto") -> str:
    """The level to use: the strongest available for ``auto``; a named level falls back to the
    next weaker one that is available (the result records which one ran)."""
    have = available()
    if requested == "auto":
        return have[0]
    if requested not in LEVELS:
        raise ValueError(f"unknown isolation level {requested!r}; one of auto, {', '.join(LEVELS)}")
    return next(lvl for lvl in LEVELS[LEVELS.index(requested):] if lvl in have)


# -- bubblewrap --------------------------------------------------------------------------------
def bwrap_argv(argv: Sequence[str], policy: Policy, empty_file: Path) -> list[str]:
    """``argv`` run under bubblewrap with ``policy`` (``empty_file`` stands in for hidden
    files; hidden directories become empty tmpfs)."""
    out = ["bwrap", "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc"]
    writable = [Path(p) for p in policy.writable]
    hide_dirs = [p for p in policy.hide if p.is_dir()]
    # Mount order matters: a later mount covers an earlier one. Hidden folders above the
    # writable ones first, then the writable ones, then what is hidden or read-only inside them.
    inner = [d for d in hide_dirs if any(d.is_relative_to(w) for w in writable)]
    outer = [d for d in hide_dirs if d not in inner]
    for path in outer:
        out += ["--tmpfs", str(path)]
    for path in policy.reveal:
        if path.is_dir() and any(path.is_relative_to(d) for d in outer):
            out += ["--ro-bind", str(path), str(path)]
    root = str(policy.root)
    if any(policy.root.is_relative_to(d) for d in outer):
        out += ["--ro-bind", root, root]  # mounted again on top of a hidden parent
    for path in writable:
        out += ["--bind", str(path), str(path)]
    for path in inner:
        out += ["--tmpfs", str(path)]
    for path in policy.hide:
        if path.is_file():
            out += ["--ro-bind", str(empty_file), str(path)]
    for path in policy.readonly:
        if Path(path).is_file():
            out += ["--ro-bind", str(path), str(path)]
    out += ["--unshare-pid", "--die-with-parent", "--new-session"]
    if not policy.network:
        out += ["--unshare-net"]
    return [*out, "--chdir", root, "--", *argv]


# -- Landlock ----------------------------------------------------------------------------------
class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _visible_roots(hide: Sequence[Path], base: Path = Path("/")) -> list[Path]:
    """Paths that together cover ``base`` except ``hide`` (Landlock only grants, so hiding a
    path means granting its siblings on the way down)."""
    hidden = {p.resolve() for p in hide}
    out: list[Path] = []

    def visit(directory: Path) -> None:
        try:
            children = list(directory.iterdir())
        except OSError:
            return
        for child in children:
            # A symbolic link is never granted: Landlock checks the resolved path, which the
            # walk covers (or hides) on its own; granting the link would grant its target.
            if child in hidden or child.is_symlink():
                continue
            if any(h.is_relative_to(child) for h in hidden) and child.is_dir():
                visit(child)
            else:
                out.append(child)

    if not any(h.is_relative_to(base) for h in hidden):
        return [base]
    if base in hidden:
        return []
    visit(base)
    return out


def _fs_rights(abi: int) -> int:
    """Every file-system right the kernel's Landlock ABI knows."""
    return (_FS_ABI1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
            | (_FS_IOCTL_DEV if abi >= 5 else 0))


def landlock_rules(policy: Policy, abi: int) -> list[tuple[Path, int]]:
    """``(path, rights)`` grants for ``policy``: read everywhere visible, write in
    ``writable`` and ``/dev``."""
    everything = _fs_rights(abi)
    read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    rules: list[tuple[Path, int]] = [(Path("/"), _FS_READ_DIR)]  # listing, never contents
    root = policy.root.resolve()
    rules += [(p, read) for p in _visible_roots([*policy.hide, root])]  # outside the checkout
    rules += [(p, read) for p in _visible_roots([h for h in policy.hide
                                                 if h.resolve().is_relative_to(root)], root)]
    rules += [(Path(p), read) for p in policy.reveal if Path(p).is_dir()]
    for path in [Path(p) for p in policy.writable] + [Path("/dev")]:
        if not path.exists():
            continue
        inside = [h for h in policy.hide if h.resolve().is_relative_to(path.resolve())]
        if not inside:
            rules.append((path, everything))
            continue
        # Landlock only grants, per folder tree: a writable folder that holds hidden paths gets
        # every right but reading on the whole folder (new files and folders can be made; the
        # hidden data cannot be read, and a change to it fails the run's hash check), and
        # reading too on its visible parts. Files made at its top cannot be read back.
        rules.append((path, everything & ~read))
        rules += [(p, everything) for p in _visible_roots(inside, path)]
    return rules


def landlock_restrict(policy: Policy, rules: list[tuple[Path, int]] | None = None) -> None:
    """Restrict this process (and everything it starts) to ``policy``. Call in the child
    right before exec (``preexec_fn``), with ``rules`` computed before the fork. Raises
    OSError when the kernel refuses."""
    libc = _libc()
    abi = landlock_abi()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    if rules is None:
        rules = landlock_rules(policy, abi)
    everything = _fs_rights(abi)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if (abi >= 4 and not policy.network) else 0
    attr = _RulesetAttr(everything, net)
    size = ctypes.sizeof(attr) if abi >= 4 else 8
    ruleset = int(libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size),
                               ctypes.c_uint32(0)))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = rights & everything
                if not os.path.isdir(path):
                    allowed &= _FILE_RIGHTS
                rule = _PathBeneath(allowed, fd)
                if allowed and libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH,
                                            ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_SYS_RESTRICT, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


# -- nothing outlives the job ------------------------------------------------------------------
def prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where it fails or does not exist."""
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def descendants(root: int) -> dict[int, int]:
    """Every live process under ``root`` (one scan of /proc by parent pid), with its group."""
    parents: dict[int, list[tuple[int, list[str]]]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else []
        if fields:
            parents.setdefault(int(fields[1]), []).append((int(entry), fields))
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for child, fields in parents.get(todo.pop(), []):
            if fields[0] != "Z":
                out[child] = int(fields[2])
            todo.append(child)
    return out


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def signal_job(pgid: int | None, pids: Iterable[int] = ()) -> None:
    """SIGKILL the job's process group and ``pids``; reaps nothing (safe in a signal handler
    while ``Popen.wait`` waits for the job's first process)."""
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_job(pgid: int | None, known: dict[int, int] | None = None) -> None:
    """SIGKILL the job's process group and every descendant of the runner (orphans are ours
    as subreaper), and reap them all, so their CPU time is counted and nothing outlives it.
    Call after the job's first process was waited for. ``known``: the descendants just found
    (an empty one means nothing is left to find)."""
    signal_job(pgid)
    for _ in range(500):
        _reap()
        left = list(descendants(os.getpid()) if known is None else known)
        known = None
        if not left:
            return
        signal_job(None, left)
        time.sleep(0.01)


# -- one entry point for the runner --------------------------------------------------------------
@dataclass
class Sandboxed:
    """A command ready to start: ``argv`` and a ``preexec`` for ``subprocess.Popen``."""

    argv: list[str]
    preexec: Callable[[], None] | None
    level: str


def wrap(level: str, argv: Sequence[str], policy: Policy) -> Sandboxed:
    """``argv`` under ``level`` (as returned by :func:`detect`) with ``policy``."""
    if level == "bwrap":
        empty = Path(tempfile.gettempdir()) / "autolab-sandbox-empty"
        if not empty.exists():
            empty.write_bytes(b"")
            empty.chmod(0o444)
        return Sandboxed(bwrap_argv(argv, policy, empty), None, level)
    if level == "landlock":
        rules = landlock_rules(policy, landlock_abi())  # walk the tree before the fork

        def restrict() -> None:
            landlock_restrict(policy, rules)

        return Sandboxed(list(argv), restrict, level)
    if level == "none":
        return Sandboxed(list(argv), None, level)
    raise ValueError(f"unknown isolation level {level!r}")

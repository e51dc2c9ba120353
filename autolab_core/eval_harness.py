"""Protected evaluation: the (patched, untrusted) model runs in a separate, restricted process;
the protected parent sends it inputs over a pipe, gets outputs (e.g. logits) back and computes
the metric itself, so nothing the patch runs at import (replacing ``math.log``, ``json.dumps``,
training) touches the number. Standard library only; see docs/trust.md.

The child is a fresh interpreter (``-P -s -B``) running this file with ``--child MODULE:FUNCTION
ARGS``; ``FUNCTION(*ARGS)`` (in the lab's protected file) builds the model and returns
``handler(inputs: list[Array]) -> list[Array-like]``. It gets an environment without secrets
(``job_env``), its own session, CPU and file-size limits (no file contents written), and where
bubblewrap works a read-only file system, no network and the ``hide`` paths emptied. Its output
goes to a pipe only the parent reads; the parent shows it only neutralised, in errors.

Wire format (both ways): ``b"ALH1"``, a 4-byte little-endian header length, a JSON header
``{"arrays": [{"dtype": "float32", "shape": [2, 64, 256]}]}`` or ``{"error": "..."}``, then the
raw little-endian bytes. Nothing is unpickled: the parent checks dtype, shape and sizes and turns
the bytes into tensors with ``torch.frombuffer`` / ``numpy.frombuffer`` / ``array.array``.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["Array", "HarnessError", "ModelChild", "isolation_available", "neutralise"]

MAGIC = b"ALH1"
#: dtype name -> item size. Names follow numpy/torch (``torch.float32`` is ``"float32"``).
DTYPES = {"bool": 1, "uint8": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8,
          "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
MAX_HEADER, MAX_ARRAYS, MAX_DIMS = 1 << 16, 64, 8  # header bytes, arrays per frame, dims


class HarnessError(RuntimeError):
    """The model process crashed, timed out, raised, or broke the protocol."""


@dataclass(frozen=True)
class Array:
    """A dense little-endian array on the wire: dtype name, shape and raw bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise HarnessError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if len(self.shape) > MAX_DIMS or any(not isinstance(n, int) or n < 0 for n in self.shape):
            raise HarnessError(f"bad shape {self.shape!r}: at most {MAX_DIMS} sizes >= 0")
        if len(self.data) != math.prod(self.shape) * DTYPES[self.dtype]:
            raise HarnessError(f"{len(self.data)} bytes do not fit dtype {self.dtype} and shape "
                               f"{list(self.shape)}")

    @classmethod
    def of(cls, value: Any) -> Array:
        """An :class:`Array` from an Array, a CPU torch tensor or a numpy array."""
        if isinstance(value, Array):
            return value
        if type(value).__name__ == "Array" and isinstance(getattr(value, "data", None), bytes):
            return cls(str(value.dtype), tuple(value.shape), value.data)  # the child's own copy
        if sys.byteorder != "little":
            raise HarnessError("the wire format is little-endian; this host is big-endian")
        dtype = str(value.dtype).removeprefix("torch.")
        shape = tuple(int(n) for n in value.shape)
        if hasattr(value, "data_ptr"):  # torch: raw bytes of a contiguous CPU copy, no numpy
            import ctypes

            t = value.detach().to("cpu").contiguous()
            data = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())
        else:
            data = value.tobytes()
        return cls(dtype, shape, data)


def neutralise(text: str, limit: int = 4000) -> str:
    """Untrusted text made safe to show: no control characters, no result or metric markers
    (``AUTOLAB_`` becomes ``AUTOLAB-``), at most ``limit`` characters, each line indented."""
    text = text[-limit:].replace("AUTOLAB_", "AUTOLAB-")
    clean = "".join(c if c.isprintable() or c == "\n" else "?" for c in text)
    return "\n".join("  | " + line for line in clean.splitlines())


def _shown(value: object) -> str:
    """Untrusted data in an error message: short, one line, neutralised."""
    return neutralise(repr(value)[:200]).strip().removeprefix("| ")


# -- frames ----------------------------------------------------------------------------------
def encode(arrays: Sequence[Array] | None = None, error: str | None = None) -> bytes:
    """One frame holding ``arrays`` (or an ``error`` message)."""
    if error is not None:
        header: dict[str, Any] = {"error": error[:2000]}
        payload = b""
    else:
        items = [Array.of(a) for a in arrays or ()]
        header = {"arrays": [{"dtype": a.dtype, "shape": list(a.shape)} for a in items]}
        payload = b"".join(a.data for a in items)
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + payload


def _parse_header(raw: bytes) -> list[tuple[str, tuple[int, ...]]] | str:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HarnessError(f"protocol: the header is not JSON ({exc})") from None
    if isinstance(header, dict) and isinstance(header.get("error"), str):
        return str(header["error"])
    specs = header.get("arrays") if isinstance(header, dict) else None
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise HarnessError(f"protocol: the header must hold a list 'arrays' of at most "
                           f"{MAX_ARRAYS}, got {_shown(header)}")
    parsed = []
    for spec in specs:
        if (not isinstance(spec, dict) or spec.get("dtype") not in DTYPES
                or not isinstance(spec.get("shape"), list) or len(spec["shape"]) > MAX_DIMS
                or not all(type(n) is int and n >= 0 for n in spec["shape"])):
            raise HarnessError(f"protocol: bad array spec {_shown(spec)}")
        parsed.append((str(spec["dtype"]), tuple(spec["shape"])))
    return parsed


def read_frame(read: Callable[[int], bytes], max_bytes: int) -> list[Array] | str:
    """The arrays of one frame (or the error text it carries) from ``read(n)``, which must
    return exactly ``n`` bytes or raise. Refuses payloads over ``max_bytes``."""
    head = read(8)
    if head[:4] != MAGIC:
        raise HarnessError(f"protocol: expected a frame, got {_shown(head)}")
    (size,) = struct.unpack("<I", head[4:])
    if size > MAX_HEADER:
        raise HarnessError(f"protocol: header of {size} bytes (limit {MAX_HEADER})")
    specs = _parse_header(read(size))
    if isinstance(specs, str):
        return specs
    sizes = [math.prod(shape) * DTYPES[dtype] for dtype, shape in specs]
    if sum(sizes) > max_bytes:
        raise HarnessError(f"protocol: {sum(sizes)} bytes of arrays (limit {max_bytes})")
    return [Array(dtype, shape, read(n)) for (dtype, shape), n in zip(specs, sizes, strict=True)]


# -- isolation -------------------------------------------------------------------------------
def _bwrap_argv(cwd: Path, readable: Sequence[Path], hide: Sequence[Path],
                own_proc: bool | None = None) -> list[str]:
    # Inside the runner's own bubblewrap sandbox a fresh /proc cannot be mounted (the outer
    # /proc has read-only submounts): the child then gets the outer one, read-only.
    own = _own_proc() if own_proc is None else own_proc
    proc = ["--proc", "/proc"] if own else ["--ro-bind", "/proc", "/proc"]
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", *proc, "--tmpfs", "/tmp"]
    # back on top of the private /tmp, read-only (this package too: a checkout under /tmp)
    for path in (cwd, *readable, Path(__file__).resolve().parent):
        if path.exists() and path.resolve().is_relative_to("/tmp"):
            argv += ["--ro-bind", str(path.resolve()), str(path.resolve())]
    for path in hide:
        if path.is_dir():
            argv += ["--tmpfs", str(path.resolve())]
        elif path.exists():
            argv += ["--ro-bind", "/dev/null", str(path.resolve())]
    return [*argv, "--unshare-all", "--die-with-parent", "--new-session", "--chdir", str(cwd)]


def _bwrap_works(own_proc: bool) -> bool:
    try:
        probe = subprocess.run([*_bwrap_argv(Path("/"), (), (), own_proc), "--", "true"],
                               capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@lru_cache(maxsize=1)
def _own_proc() -> bool:
    """Whether the child's sandbox can mount its own /proc (not inside another sandbox)."""
    return _bwrap_works(own_proc=True)


@lru_cache(maxsize=1)
def isolation_available() -> str:
    """``"bwrap"`` when bubblewrap can start a read-only, network-less process here (also
    nested in the runner's sandbox), else ``"none"`` (the child still gets its own session,
    rlimits and a clean environment)."""
    if not shutil.which("bwrap"):
        return "none"
    return "bwrap" if _own_proc() or _bwrap_works(own_proc=False) else "none"


def _limits(cpu_seconds: int | None, memory_bytes: int | None) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, no kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file contents written
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    return apply


# -- the parent ------------------------------------------------------------------------------
class ModelChild:
    """The untrusted model in its own restricted process (a context manager; docs/trust.md has
    an example). ``entry``: ``MODULE:FUNCTION`` importable from ``cwd``; ``FUNCTION(*args)``
    returns the handler. ``timeout_s`` bounds the start plus each call (wall clock), ``cpu_seconds`` the
    child's CPU time, ``memory_bytes`` its address space. ``sandbox``: ``"auto"`` (bubblewrap
    when it works), ``"bwrap"`` (required) or ``"none"``. ``isolation`` says which one ran.
    """

    def __init__(self, entry: str, *, cwd: Path, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, timeout_s: float = 300.0,
                 cpu_seconds: int | None = None, memory_bytes: int | None = None,
                 hide: Sequence[Path] = (), readable: Sequence[Path] = (),
                 sandbox: str = "auto", max_reply_bytes: int = 1 << 31) -> None:
        if ":" not in entry:
            raise ValueError(f"entry must be MODULE:FUNCTION, got {entry!r}")
        if sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"sandbox must be auto, bwrap or none, got {sandbox!r}")
        from autolab_core.secrets import job_env

        self.entry, self.cwd, self.args = entry, Path(cwd).resolve(), list(args)
        self.env = job_env(env)
        self.timeout_s, self.max_reply_bytes = timeout_s, max_reply_bytes
        self.cpu_seconds, self.memory_bytes = cpu_seconds, memory_bytes
        self.hide, self.readable = [Path(p) for p in hide], [Path(p) for p in readable]
        level = isolation_available() if sandbox != "none" else "none"
        if sandbox == "bwrap" and level != "bwrap":
            raise HarnessError("sandbox='bwrap' but bubblewrap cannot start a sandbox here "
                               "(install Debian's `bubblewrap` and allow user namespaces)")
        self.isolation = level
        self._proc: subprocess.Popen[bytes] | None = None
        self._err: collections.deque[bytes] = collections.deque(maxlen=200)
        self._buffer = bytearray()  # grows in place: replies are megabytes in 64 KiB reads

    def argv(self) -> list[str]:
        """The child's command line (bubblewrap first when it isolates)."""
        child = [sys.executable, "-P", "-s", "-B", str(Path(__file__).resolve()), "--child",
                 self.entry, *self.args]
        if self.isolation == "bwrap":
            return [*_bwrap_argv(self.cwd, self.readable, self.hide), "--", *child]
        return child

    def start(self) -> ModelChild:
        """Start the child (it loads the model while the parent goes on); idempotent."""
        if self._proc is None:
            self._proc = subprocess.Popen(
                self.argv(), cwd=self.cwd, env=self.env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=_limits(self.cpu_seconds, self.memory_bytes),
            )
            threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stream = self._proc.stderr
        for line in iter(lambda: stream.readline(4096), b""):  # bounded: no newline, no matter
            self._err.append(line[:1000])

    def cpu_used(self) -> float | None:
        """CPU time the child's process tree has used so far (from ``/proc``, also inside
        bubblewrap, whose processes the parent does not reap); None where ``/proc`` is absent."""
        if self._proc is None or not Path("/proc/self/stat").exists():
            return None
        ticks, todo = 0, [self._proc.pid]
        while todo:
            pid = todo.pop()
            try:  # utime stime cutime cstime: fields 14-17, counted after the ")"
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(f) for f in fields[11:15])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError, IndexError):
                continue
        return ticks / os.sysconf("SC_CLK_TCK")

    def output_tail(self) -> str:
        """The child's last lines of output, neutralised (see :func:`neutralise`)."""
        return neutralise(b"".join(self._err).decode("utf-8", "replace"))

    def call(self, inputs: Sequence[Any]) -> list[Array]:
        """Send ``inputs`` (Arrays, tensors or numpy arrays); the child's output arrays."""
        self.send(inputs)
        return self.receive()

    def send(self, inputs: Sequence[Any]) -> None:
        """Send one request without waiting (to keep two children busy at once)."""
        proc = self.start()._proc
        assert proc is not None and proc.stdin is not None
        frame = encode([Array.of(a) for a in inputs])
        try:
            proc.stdin.write(frame)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail("exited before it took the inputs")

    def receive(self) -> list[Array]:
        """The reply to the oldest request sent."""
        if self._proc is None:
            raise HarnessError("the model process is not running")
        deadline = time.monotonic() + self.timeout_s
        reply = read_frame(lambda n: self._read(n, deadline), self.max_reply_bytes)
        if isinstance(reply, str):
            self.close(grace_s=0.0)
            raise HarnessError(f"the model process raised: {neutralise(reply)}\n"
                               f"its last output:\n{self.output_tail()}")
        return reply

    def _read(self, n: int, deadline: float) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail(f"did not answer within {self.timeout_s:g} s")
            chunk = os.read(fd, max(1 << 16, n - len(self._buffer)))
            if not chunk:
                self._fail("exited before it answered")
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _fail(self, what: str) -> NoReturn:
        code = self.close(grace_s=0.0)
        detail = f" (exit code {code})" if code is not None else ""
        if self.cpu_seconds and code in (-signal.SIGXCPU, -signal.SIGKILL):
            detail += f"; its CPU limit is {self.cpu_seconds} s"
        raise HarnessError(f"the model process {what}{detail}; its last output:\n"
                           f"{self.output_tail()}")

    def close(self, grace_s: float = 5.0) -> int | None:
        """End the child: end of input first (so it exits and its CPU time is accounted to us),
        after ``grace_s`` SIGKILL to everything in its session; its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream and stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its session
        code = proc.wait()
        time.sleep(0.05)  # let the drain thread take the last lines
        return code

    def __enter__(self) -> ModelChild:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the child -------------------------------------------------------------------------------
def _child(argv: list[str]) -> int:
    """Child side: load ``MODULE:FUNCTION`` from the working directory and serve requests."""
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # whatever the model prints goes to the parent's private pipe
    sys.path.insert(0, os.getcwd())
    module_name, _, function = argv[0].partition(":")

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = requests.read(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    try:
        handler = getattr(importlib.import_module(module_name), function)(*argv[1:])
    except BaseException as exc:  # reported to the parent, which decides
        replies.write(encode(error=f"loading the model failed: {type(exc).__name__}: {exc}"))
        replies.flush()
        raise
    while True:
        try:
            inputs = read_frame(read, 1 << 34)
        except EOFError:
            return 0
        if isinstance(inputs, str):
            return 1
        try:
            outputs = handler(inputs)
            frame = encode(list(outputs))
        except Exception as exc:  # reported to the parent
            frame = encode(error=f"{type(exc).__name__}: {exc}")
        replies.write(frame)
        replies.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child(sys.argv[2:]))

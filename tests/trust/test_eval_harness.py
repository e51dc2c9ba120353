"""autolab_core.eval_harness: real child processes (no torch: the model modules here use the
standard library), the wire format's refusals, limits, secrets and the result channel."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autolab_core.eval_harness import (
    MAGIC,
    Array,
    HarnessError,
    ModelChild,
    encode,
    isolation_available,
    read_frame,
)

MODEL = '''
import json, os, sys, time
from autolab_core.eval_harness import Array

print("AUTOLAB_RESULT {\\"nonce\\": \\"x\\", \\"value\\": 0.0}", flush=True)  # a forged line

def serve(mode="double"):
    if mode == "crash_at_load":
        sys.exit(3)
    def handler(inputs):
        (x,) = inputs
        if mode == "sleep":
            time.sleep(60)
        if mode == "raise":
            raise ValueError("broken model")
        if mode == "spin":
            while True:
                pass
        if mode == "env":
            return [Array("uint8", (len(b := json.dumps(sorted(os.environ)).encode()),), b)]
        if mode == "write":
            try:
                with open(os.path.join(os.getcwd(), "cache.bin"), "wb") as fh:
                    fh.write(b"x" * 100)
                msg = b"wrote"
            except OSError as exc:
                msg = type(exc).__name__.encode()
            return [Array("uint8", (len(msg),), msg)]
        if mode == "read":
            try:
                data = open("secret.txt", "rb").read()
            except OSError as exc:
                data = type(exc).__name__.encode()
            return [Array("uint8", (len(data),), data)]
        print("AUTOLAB_RESULT forged from the handler", flush=True)
        return [Array("uint8", x.shape, bytes((2 * b) % 256 for b in x.data)),
                Array("int64", (1,), (len(x.data)).to_bytes(8, "little"))]
    return handler
'''


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    (tmp_path / "model.py").write_text(MODEL)
    return tmp_path


def child(lab: Path, mode: str, **kw: object) -> ModelChild:
    options: dict = {"cwd": lab, "args": [mode], "timeout_s": 60, "sandbox": "none",
                     "env": {**os.environ, "HF_TOKEN": "hf_secret_value_123"}}
    options.update(kw)
    return ModelChild("model:serve", **options)


def test_round_trip_returns_raw_arrays(lab: Path) -> None:
    with child(lab, "double") as model:
        out = model.call([Array("uint8", (2, 3), bytes([1, 2, 3, 4, 5, 200]))])
        again = model.call([Array("uint8", (1,), b"\x07")])
        used = model.cpu_used()
    assert used is not None and used > 0
    assert out[0] == Array("uint8", (2, 3), bytes([2, 4, 6, 8, 10, 144]))
    assert out[1].dtype == "int64" and int.from_bytes(out[1].data, "little") == 6
    assert again[0].data == b"\x0e"


def test_child_environment_has_no_secrets(lab: Path) -> None:
    with child(lab, "env") as model:
        (names,) = model.call([Array("uint8", (0,), b"")])
    env = json.loads(names.data)
    assert "HF_TOKEN" not in env and "PATH" in env
    assert not any(name.startswith("AUTOLAB_RESULT") for name in env)


def test_child_cannot_write_file_contents(lab: Path) -> None:
    with child(lab, "write") as model:
        (msg,) = model.call([Array("uint8", (0,), b"")])
    assert msg.data != b"wrote"
    assert not (lab / "cache.bin").exists() or (lab / "cache.bin").stat().st_size == 0


@pytest.mark.parametrize(("mode", "message"), [
    ("crash_at_load", "loading the model failed"),
    ("raise", "ValueError: broken model"),
])
def test_child_failures_are_clear_errors(lab: Path, mode: str, message: str) -> None:
    with child(lab, mode) as model, pytest.raises(HarnessError, match=message) as info:
        model.call([Array("uint8", (1,), b"\x01")])
    assert "AUTOLAB_RESULT" not in str(info.value)  # the child's text is neutralised
    assert "AUTOLAB-RESULT" in str(info.value)


def test_time_and_cpu_limits_end_the_child(lab: Path) -> None:
    with child(lab, "sleep", timeout_s=3) as model, pytest.raises(HarnessError,
                                                                  match="within 3 s"):
        model.call([Array("uint8", (1,), b"\x01")])
    with child(lab, "spin", cpu_seconds=2) as model, pytest.raises(HarnessError,
                                                                   match="CPU limit is 2 s"):
        model.call([Array("uint8", (1,), b"\x01")])


def test_child_output_never_reaches_the_parents_stdout(lab: Path) -> None:
    parent = textwrap.dedent(f"""
        from pathlib import Path
        from autolab_core.eval_harness import Array, ModelChild
        with ModelChild("model:serve", cwd=Path({str(lab)!r}), args=["double"],
                        sandbox="none") as m:
            print("parent got", m.call([Array("uint8", (1,), b"\\x01")])[0].data)
    """)
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert "parent got b'\\x02'" in done.stdout
    assert "AUTOLAB_RESULT" not in done.stdout + done.stderr


@pytest.mark.skipif(isolation_available() != "bwrap", reason="bubblewrap cannot start here")
def test_bwrap_child_cannot_read_hidden_files(lab: Path) -> None:
    (lab / "secret.txt").write_text("held-out answers")
    with child(lab, "read", sandbox="bwrap", hide=[lab / "secret.txt"]) as model:
        assert model.isolation == "bwrap"
        (data,) = model.call([Array("uint8", (0,), b"")])
        used = model.cpu_used()  # the sandboxed interpreter is counted, not just bwrap
    assert used is not None and used > 0.02
    assert b"held-out" not in data.data  # empty, or refused (PermissionError)
    with child(lab, "write", sandbox="bwrap") as model:
        (msg,) = model.call([Array("uint8", (0,), b"")])
    assert msg.data != b"wrote" and not (lab / "cache.bin").exists()


def _frame(header: object, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + payload


def _reader(data: bytes):  # type: ignore[no-untyped-def]
    pos = [0]

    def read(n: int) -> bytes:
        chunk = data[pos[0]: pos[0] + n]
        pos[0] += n
        if len(chunk) < n:
            raise EOFError
        return chunk
    return read


@pytest.mark.parametrize(("frame", "message"), [
    (b"\x80\x04pickle!", "expected a frame"),
    (MAGIC + struct.pack("<I", 5) + b"{nope", "not JSON"),
    (_frame({"arrays": [{"dtype": "object", "shape": [1]}]}, b"x"), "bad array spec"),
    (_frame({"arrays": [{"dtype": "uint8", "shape": [-1]}]}), "bad array spec"),
    (_frame({"arrays": [{"dtype": "float64", "shape": [1 << 20, 1 << 20]}]}), "limit"),
    (MAGIC + struct.pack("<I", 1 << 30), "header of"),
])
def test_wire_format_refuses_what_it_does_not_expect(frame: bytes, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        read_frame(_reader(frame), 1 << 20)


def test_wire_format_round_trip_and_error_frames() -> None:
    arrays = [Array("float32", (2,), struct.pack("<2f", 1.5, -2.0)), Array("bool", (0,), b"")]
    assert read_frame(_reader(encode(arrays)), 1 << 20) == arrays
    assert read_frame(_reader(encode(error="boom")), 1 << 20) == "boom"
    with pytest.raises(HarnessError, match="do not fit"):
        Array("float32", (3,), b"\x00" * 8)


def test_protocol_errors_neutralise_what_the_child_sent() -> None:
    forged = _frame({"AUTOLAB_RESULT": {"nonce": "n", "value": 0.1}})
    with pytest.raises(HarnessError) as info:
        read_frame(_reader(forged), 1 << 20)
    assert "AUTOLAB_RESULT" not in str(info.value) and "AUTOLAB-RESULT" in str(info.value)

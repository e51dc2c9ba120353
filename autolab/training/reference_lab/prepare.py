"""PROTECTED: data and evaluation for the reference lab. Patches must not change this file.

Data: training reads the Shakespeare corpus shipped with autolab (``autolab.training`` package
data) as raw bytes (vocabulary 256), all but the last VAL_FRACTION. The scored held-out text is
``data/val.bin`` (EVAL_WINDOWS windows of EVAL_CONTEXT + 1 bytes from the start of the
validation split), declared ``protected_data`` in autolab.toml: pinned by hash, hidden from
training where the runner sandboxes it, and checked against VAL_SHA256 here before scoring.

Evaluation (``python -P prepare.py eval``) never imports ``train.py`` itself. It starts the
patched model twice in separate restricted processes (``autolab_core.eval_harness``): the
*scorer* gets the scored windows, the *checker* gets the same windows with every byte after a
secret random cut per window replaced. The parent scores the scorer's logits (``val_bpb``,
bits per byte) and requires the two to agree at every position up to each cut: a model that
looks at later bytes anywhere in the scored data fails with ``causality check FAILED``. The
last target of a window is never an input (windows are EVAL_CONTEXT + 1 bytes apart). Writes
``$AUTOLAB_OUTPUT_DIR/result.json``: ``{"val_bpb": ..., "eval_tokens": ..., "causal": true}``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import lzma
import math
import os
import sys
from pathlib import Path
from typing import Any

VOCAB_SIZE = 256  # byte-level
VAL_FRACTION = 0.05  # the last 5% of the corpus is held out
EVAL_CONTEXT = 64  # every evaluation window is this many bytes, whatever train.py says
EVAL_WINDOWS = 1024  # fixed slice: the first EVAL_WINDOWS windows of the validation split
EVAL_BATCH = 128  # windows per request to the model (no effect on the number)
VAL_FILE = "data/val.bin"  # EVAL_WINDOWS * (EVAL_CONTEXT + 1) bytes, protected data
VAL_SHA256 = "b77e8e9d986c587fc9f6c7aa852ec614772e0b1290d05045b37815948b58d288"
CAUSAL_TOLERANCE = 1e-4  # max |change| of an earlier logit allowed (float noise is ~1e-6)
EVAL_TIMEOUT_S = 300  # wall-clock limit for the model to load and for each answer
EVAL_CPU_SECONDS = 30  # CPU-time limit of each model process (honest: about 2-3 s)


@functools.cache
def corpus() -> Any:
    """The whole corpus as a uint8 tensor."""
    import torch

    packed = importlib.resources.files("autolab.training").joinpath("data/shakespeare.txt.xz")
    raw = lzma.decompress(packed.read_bytes())
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def split(name: str) -> Any:
    """The ``"train"`` bytes (uint8). The validation split is held out from training."""
    if name != "train":
        raise ValueError(f"split {name!r}: only 'train' is readable; the validation text is "
                         f"held out and only `python prepare.py eval` reads it ({VAL_FILE})")
    data = corpus()
    return data[: int(len(data) * (1 - VAL_FRACTION))]


def get_batch(split_name: str, batch_size: int, seq_len: int, generator: Any = None) -> Any:
    """Random training windows: inputs ``x`` and next-byte targets ``y``, int64 ``(B, seq_len)``."""
    import torch

    data = split(split_name)
    starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


# -- the model side (runs in the restricted child process, with the patched train.py) --------
def serve_model(weights: str) -> Any:
    """Build ``train.build_model()``, load ``weights`` and return the logits handler."""
    import torch

    import train  # the editable file: imported only here, in the child

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    model = train.build_model()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()

    def logits(inputs: list[Any]) -> list[Any]:
        (x,) = inputs
        idx = torch.frombuffer(bytearray(x.data), dtype=torch.uint8).view(x.shape).long()
        with torch.no_grad():
            out = model(idx)
        if isinstance(out, tuple | list):
            out = out[0]
        return [out.float()]

    return logits


# -- the protected parent ----------------------------------------------------------------------
def held_out(lab: Path) -> bytes:
    """The scored windows, refused unless they hash to VAL_SHA256."""
    path = lab / VAL_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"eval: cannot read the held-out data {path}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != VAL_SHA256:
        raise SystemExit(f"eval: {VAL_FILE} was changed (its SHA-256 is not the pinned "
                         f"VAL_SHA256); restore it from main")
    return data


def _tensor(reply: list[Any], shape: tuple[int, ...]) -> Any:
    import torch

    if len(reply) != 1 or reply[0].dtype != "float32" or reply[0].shape != shape:
        got = [(a.dtype, a.shape) for a in reply]
        raise SystemExit(f"eval: model(x) for x of shape {shape[:2]} must return float logits "
                         f"of shape {shape}, got {got}")
    return torch.frombuffer(bytearray(reply[0].data), dtype=torch.float32).view(shape)


def evaluate(scorer: Any, checker: Any, val: bytes) -> dict[str, Any]:
    """``val_bpb`` from ``scorer``'s logits, after the causality check against ``checker``."""
    import torch

    width = EVAL_CONTEXT + 1
    windows = torch.frombuffer(bytearray(val), dtype=torch.uint8).view(EVAL_WINDOWS, width)
    x, y = windows[:, :-1], windows[:, 1:].long()
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))  # secret
    positions = torch.arange(EVAL_CONTEXT)
    total_nats, worst = 0.0, 0.0
    for i in range(0, EVAL_WINDOWS, EVAL_BATCH):
        xb = x[i : i + EVAL_BATCH].contiguous()
        cuts = torch.randint(0, EVAL_CONTEXT - 1, (len(xb), 1), generator=gen)
        after = positions[None, :] > cuts
        shift = torch.randint(1, VOCAB_SIZE, xb.shape, generator=gen, dtype=torch.uint8)
        checked = torch.where(after, xb + shift, xb)  # uint8 wraps: every later byte differs
        scorer.send([xb])
        checker.send([checked])
        shape = (len(xb), EVAL_CONTEXT, VOCAB_SIZE)
        logits, control = _tensor(scorer.receive(), shape), _tensor(checker.receive(), shape)
        diff = (logits - control).abs().masked_fill(after[:, :, None], 0.0).max().item()
        if not diff <= CAUSAL_TOLERANCE:
            raise SystemExit(
                f"eval: causality check FAILED: replacing the bytes after a secret position "
                f"changed the logits at or before it by up to {diff:.3g} (allowed "
                f"{CAUSAL_TOLERANCE}); the model sees the future (check the causal attention "
                f"mask in train.py)")
        worst = max(worst, diff)
        logp = torch.log_softmax(logits.double(), dim=-1)
        total_nats -= logp.gather(-1, y[i : i + EVAL_BATCH, :, None]).sum().item()
    tokens = EVAL_WINDOWS * EVAL_CONTEXT
    bpb = total_nats / tokens / math.log(2)
    if not math.isfinite(bpb):
        raise SystemExit(f"eval: val_bpb is {bpb}; the model produced non-finite logits")
    return {"val_bpb": bpb, "eval_tokens": tokens, "eval_context": EVAL_CONTEXT,
            "causal": True, "causal_max_diff": worst}


def main(argv: list[str]) -> int:
    if argv[1:] != ["eval"]:
        print("usage: python -P prepare.py eval", file=sys.stderr)
        return 2
    from autolab_core.eval_harness import HarnessError, ModelChild

    lab = Path(__file__).resolve().parent
    out_dir = Path(os.environ.get("AUTOLAB_OUTPUT_DIR", "out")).resolve()
    weights = out_dir / "model.pt"
    if not weights.exists():
        raise SystemExit(f"eval: no {weights}; train.py must save the model's state_dict there")
    val = held_out(lab)
    options: dict[str, Any] = {
        "cwd": lab, "args": [str(weights)], "timeout_s": EVAL_TIMEOUT_S,
        "cpu_seconds": EVAL_CPU_SECONDS, "hide": [lab / VAL_FILE], "readable": [out_dir],
        "env": {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        "max_reply_bytes": EVAL_BATCH * EVAL_CONTEXT * VOCAB_SIZE * 4,  # one batch of logits
    }
    scorer = ModelChild("prepare:serve_model", **options).start()
    checker = ModelChild("prepare:serve_model", **options).start()
    try:
        import torch  # while the two model processes load

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
        result = evaluate(scorer, checker, val)
        cpu = [child.cpu_used() for child in (scorer, checker)]
    except HarnessError as exc:
        raise SystemExit(f"eval: {exc}") from None
    finally:
        scorer.close()
        checker.close()
    if None not in cpu:
        result["eval_cpu_seconds"] = round(sum(c or 0.0 for c in cpu), 2)  # the model processes
    result["eval_sandboxed"] = int(scorer.isolation != "none")
    (out_dir / "result.json").write_text(json.dumps(result) + "\n")
    print(f"val_bpb: {result['val_bpb']:.6f} ({result['eval_tokens']} bytes, causal check "
          f"passed, model isolation: {scorer.isolation})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

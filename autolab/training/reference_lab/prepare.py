"""PROTECTED: data and evaluation for the reference lab. Patches must not change this file.

Data: the Shakespeare corpus shipped with autolab (``autolab.training`` package data), read
as raw bytes (vocabulary 256). The last VAL_FRACTION of the bytes is the validation split;
training never sees it.

Evaluation (``python prepare.py eval``): imports the lab's ``train.py`` as a module, builds
the model with ``train.build_model()``, loads ``$AUTOLAB_OUTPUT_DIR/model.pt`` and computes
``val_bpb``, the cross-entropy in bits per byte over a fixed slice of the validation split in
fixed windows of EVAL_CONTEXT bytes. Those constants live here, so a patch to train.py (say,
a different SEQ_LEN) cannot change what is measured. A causality check first verifies that
the logits at a position do not depend on later bytes: a model that peeks at the future
would fake a low val_bpb, so the evaluation refuses it. Writes
``$AUTOLAB_OUTPUT_DIR/result.json``: ``{"val_bpb": ..., "eval_tokens": ..., "causal": true}``.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import lzma
import math
import os
import sys
from pathlib import Path

import torch

VOCAB_SIZE = 256  # byte-level
VAL_FRACTION = 0.05  # the last 5% of the corpus is held out
EVAL_CONTEXT = 64  # every evaluation window is this many bytes, whatever train.py says
EVAL_WINDOWS = 1024  # fixed slice: the first EVAL_WINDOWS * EVAL_CONTEXT (+1) validation bytes
EVAL_BATCH = 128  # windows per forward pass (no effect on the number)
CAUSAL_POSITIONS = (0, 17, 40, EVAL_CONTEXT - 2)  # perturb everything after each of these
CAUSAL_TOLERANCE = 1e-4  # max |change| of an earlier logit allowed (float noise is ~1e-6)


@functools.cache
def corpus() -> torch.Tensor:
    """The whole corpus as a uint8 tensor."""
    packed = importlib.resources.files("autolab.training").joinpath("data/shakespeare.txt.xz")
    raw = lzma.decompress(packed.read_bytes())
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def split(name: str) -> torch.Tensor:
    """``"train"`` or ``"val"`` bytes (uint8). The boundary is fixed."""
    data = corpus()
    boundary = int(len(data) * (1 - VAL_FRACTION))
    if name == "train":
        return data[:boundary]
    if name == "val":
        return data[boundary:]
    raise ValueError(f"split must be 'train' or 'val', got {name!r}")


def get_batch(
    split_name: str, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs ``x`` and next-byte targets ``y``, both int64 ``(B, seq_len)``."""
    data = split(split_name)
    starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation slice as ``(EVAL_WINDOWS, EVAL_CONTEXT)`` inputs and targets."""
    val = split("val")
    need = EVAL_WINDOWS * EVAL_CONTEXT + 1
    if len(val) < need:
        raise RuntimeError(f"validation split has {len(val)} bytes, evaluation needs {need}")
    flat = val[:need].long()
    x = flat[:-1].view(EVAL_WINDOWS, EVAL_CONTEXT)
    y = flat[1:].view(EVAL_WINDOWS, EVAL_CONTEXT)
    return x, y


def _load_train_module(lab: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train", lab / "train.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"eval: cannot import {lab / 'train.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "build_model"):
        raise SystemExit("eval: train.py must define build_model() returning the model")
    return module


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, tuple | list):
        out = out[0]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (*x.shape, VOCAB_SIZE):
        shape = getattr(out, "shape", type(out).__name__)
        raise SystemExit(
            f"eval: model(x) for x of shape {tuple(x.shape)} must return logits of shape "
            f"{(*x.shape, VOCAB_SIZE)}, got {shape}"
        )
    return out.float()


def causality_violation(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """None if logits at positions <= p ignore the bytes after p, else a description."""
    base = _logits(model, x)
    gen = torch.Generator().manual_seed(1234)
    for p in CAUSAL_POSITIONS:
        perturbed = x.clone()
        tail = perturbed[:, p + 1 :]
        perturbed[:, p + 1 :] = (tail + torch.randint(1, VOCAB_SIZE, tail.shape, generator=gen)) % VOCAB_SIZE
        diff = (_logits(model, perturbed)[:, : p + 1] - base[:, : p + 1]).abs().max().item()
        if not diff <= CAUSAL_TOLERANCE:
            return (
                f"changing the bytes after position {p} changed the logits at positions <= {p} "
                f"by up to {diff:.3g} (allowed {CAUSAL_TOLERANCE}); the model sees the future "
                f"(check the causal attention mask in train.py)"
            )
    return None


def evaluate(model: torch.nn.Module) -> dict[str, object]:
    """``val_bpb`` of ``model`` on the fixed slice, after the causality check."""
    x, y = eval_windows()
    model.eval()
    with torch.no_grad():
        problem = causality_violation(model, x[:8])
        if problem is not None:
            raise SystemExit(f"eval: causality check FAILED: {problem}")
        total_nats = 0.0
        for i in range(0, EVAL_WINDOWS, EVAL_BATCH):
            logits = _logits(model, x[i : i + EVAL_BATCH])
            logp = torch.log_softmax(logits.double(), dim=-1)
            total_nats -= logp.gather(-1, y[i : i + EVAL_BATCH, :, None]).sum().item()
    tokens = int(y.numel())
    bpb = total_nats / tokens / math.log(2)
    if not math.isfinite(bpb):
        raise SystemExit(f"eval: val_bpb is {bpb}; the model produced non-finite logits")
    return {"val_bpb": bpb, "eval_tokens": tokens, "eval_context": EVAL_CONTEXT,
            "causal": True}


def main(argv: list[str]) -> int:
    if argv[1:] != ["eval"]:
        print("usage: python prepare.py eval", file=sys.stderr)
        return 2
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    lab = Path(__file__).resolve().parent
    out_dir = Path(os.environ.get("AUTOLAB_OUTPUT_DIR", "out"))
    weights = out_dir / "model.pt"
    if not weights.exists():
        raise SystemExit(f"eval: no {weights}; train.py must save the model's state_dict there")
    train = _load_train_module(lab)
    model = train.build_model()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    result = evaluate(model)
    (out_dir / "result.json").write_text(json.dumps(result) + "\n")
    print(f"val_bpb: {result['val_bpb']:.6f} ({result['eval_tokens']} bytes, causal check passed)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""EDITABLE: a tiny byte-level GPT trained on Shakespeare, sized for a CPU core.

Hyperparameters are the literal constants below; change them (or the code) to improve
val_bpb, which ``python prepare.py eval`` measures on held-out text. Training runs only
under ``python train.py``; the evaluation imports this file for ``build_model()``.
"""

import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import VOCAB_SIZE, get_batch

LR = 1e-2  # peak AdamW learning rate
INIT_STD = 0.02  # std of the normal init of all weight matrices (GPT-2's value)
WEIGHT_DECAY = 0.1  # AdamW weight decay on weight matrices
GRAD_CLIP = 1.0  # max gradient norm (0 disables clipping)
DROPOUT = 0.0  # dropout probability
ACTIVATION = "gelu"  # choices: gelu, relu, swiglu
SCHEDULE = "cosine"  # learning-rate decay after warmup; choices: cosine, linear, constant
N_LAYER = 2  # transformer blocks
N_EMBD = 64  # model width
HEAD_DIM = 16  # width of one attention head (N_EMBD // HEAD_DIM heads)
SEQ_LEN = 64  # training context length in bytes
BATCH_SIZE = 32  # sequences per step
WARMUP_STEPS = 100  # linear warmup steps
STEPS = 800  # training steps (the fixed compute budget)

SEED = int(os.environ.get("AUTOLAB_SEED", "0"))  # set by the runner, not by patches
N_HEAD = max(1, N_EMBD // HEAD_DIM)
MAX_POSITIONS = max(SEQ_LEN, 64)  # the evaluation scores 64-byte windows


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        hidden = 4 * N_EMBD
        if ACTIVATION == "swiglu":
            hidden = (8 * N_EMBD) // 3
            self.gate = nn.Linear(N_EMBD, hidden, bias=False)
        elif ACTIVATION not in ("gelu", "relu"):
            raise ValueError(f"ACTIVATION must be gelu, relu or swiglu, got {ACTIVATION!r}")
        self.up = nn.Linear(N_EMBD, hidden, bias=False)
        self.down = nn.Linear(hidden, N_EMBD, bias=False)
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if ACTIVATION == "swiglu":
            h = F.silu(self.gate(x)) * self.up(x)
        elif ACTIVATION == "relu":
            h = F.relu(self.up(x))
        else:
            h = F.gelu(self.up(x))
        return self.drop(self.down(h))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        if N_EMBD % N_HEAD:
            raise ValueError(f"HEAD_DIM={HEAD_DIM} must divide N_EMBD={N_EMBD}")
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=False)
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, N_HEAD, c // N_HEAD).permute(2, 0, 3, 1, 4)
        p = DROPOUT if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.attn = Attention()
        self.ln2 = nn.LayerNorm(N_EMBD)
        self.mlp = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, N_EMBD)
        self.pos = nn.Embedding(MAX_POSITIONS, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, VOCAB_SIZE, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_model() -> GPT:
    """The model, freshly initialised (the evaluation loads the trained weights into it)."""
    return GPT()


def lr_at(step: int) -> float:
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, STEPS - WARMUP_STEPS)
    if SCHEDULE == "cosine":
        return LR * 0.5 * (1 + math.cos(math.pi * progress))
    if SCHEDULE == "linear":
        return LR * (1 - progress)
    if SCHEDULE == "constant":
        return LR
    raise ValueError(f"SCHEDULE must be cosine, linear or constant, got {SCHEDULE!r}")


def main() -> None:
    from autolab.training import log

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = build_model()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.99),
    )
    model.train()
    started, window_loss, window_steps = time.perf_counter(), 0.0, 0
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, y = get_batch("train", BATCH_SIZE, SEQ_LEN, gen)
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB_SIZE), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        window_loss, window_steps = window_loss + loss.item(), window_steps + 1
        if (step + 1) % 25 == 0 or step + 1 == STEPS:
            elapsed = time.perf_counter() - started
            log(step + 1, train_loss=window_loss / window_steps, lr=lr_at(step),
                tok_per_s=(step + 1) * BATCH_SIZE * SEQ_LEN / elapsed)
            window_loss, window_steps = 0.0, 0
    out_dir = os.environ.get("AUTOLAB_OUTPUT_DIR", "out")
    os.makedirs(out_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out_dir, "model.pt"))


if __name__ == "__main__":
    main()

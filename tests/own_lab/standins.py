"""CPU stand-ins for three kinds of third-party training repos, built on disk by the tests.

Each has the layout and output format of the real thing and trains for real (a byte-level
low-rank bigram language model with Adam, in NumPy, on a synthetic corpus generated in
memory: nothing is downloaded), in about a second on one core:

- :func:`autoresearch_like`: ``prepare.py`` (data and the bits-per-byte evaluation) and
  ``train.py`` with UPPER_CASE constants, a fixed seed (42) and the summary block ending in
  ``val_bpb:``, like karpathy/autoresearch's GPU script.
- :func:`nanogpt_like`: ``train.py`` with lowercase globals, ``configurator.py`` (exec of the
  config file, then ``--key=value`` overrides), ``config/train_tiny.py``, ``np.random.seed(1337)``
  and ``step N: train loss X, val loss Y`` lines, like karpathy/nanoGPT.
- :func:`hydra_like`: ``train.py`` with argparse flags and Hydra-style ``key=value`` overrides of
  ``conf/config.yaml`` (with a ``defaults:`` list pulling ``conf/model/small.yaml``), printing
  ``epoch N: train_loss=X val_loss=Y val_acc=Z``.
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

#: The model and data, shared by the three stand-ins (copied into each repo).
TINY_LM = '''\
import math
import numpy as np

WORDS = ("the cat dog sat ran on a mat log big small red blue and then it was very "
         "happy sad fast slow over under near far home tree").split()


def corpus(n_sentences=1200, data_seed=0):
    """Sentences from a small grammar: learnable structure, generated in memory."""
    rng = np.random.default_rng(data_seed)
    out = []
    for _ in range(n_sentences):
        n = int(rng.integers(3, 8))
        idx = rng.integers(0, len(WORDS), size=n)
        idx[1:] = (idx[:-1] * 7 + idx[1:] % 3) % len(WORDS)  # words follow words
        out.append(" ".join(WORDS[i] for i in idx) + ".")
    data = np.frombuffer(" ".join(out).encode(), dtype=np.uint8).astype(np.int64)
    split = int(0.9 * len(data))
    return data[:split], data[split:]


class BigramLM:
    """logits(next byte) = E[byte] @ W + b, a rank-`dim` bigram model."""

    def __init__(self, dim, init_std, rng):
        self.params = {"E": rng.normal(0, init_std, (256, dim)),
                       "W": rng.normal(0, init_std, (dim, 256)), "b": np.zeros(256)}
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.t = 0

    def loss(self, x, y, grad=False):
        p = self.params
        h = p["E"][x]
        logits = h @ p["W"] + p["b"]
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        nll = -np.log(prob[np.arange(len(y)), y] + 1e-12).mean()
        if not grad:
            return nll, None
        d = prob
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        gE = np.zeros_like(p["E"])
        np.add.at(gE, x, d @ p["W"].T)
        return nll, {"E": gE, "W": h.T @ d, "b": d.sum(axis=0)}

    def adam(self, grads, lr, weight_decay=0.0, beta1=0.9, beta2=0.99):
        self.t += 1
        for k, g in grads.items():
            self.m[k] = beta1 * self.m[k] + (1 - beta1) * g
            self.v[k] = beta2 * self.v[k] + (1 - beta2) * g * g
            mh = self.m[k] / (1 - beta1 ** self.t)
            vh = self.v[k] / (1 - beta2 ** self.t)
            self.params[k] -= lr * (mh / (np.sqrt(vh) + 1e-8) + weight_decay * self.params[k])


def batch(data, size, rng):
    i = rng.integers(0, len(data) - 1, size=size)
    return data[i], data[i + 1]


def evaluate_bpb(model, data):
    nll, _ = model.loss(data[:-1], data[1:])
    return nll / math.log(2)
'''

AUTORESEARCH_PREPARE = '''\
"""Data and evaluation (read-only): the corpus and bits per byte on the held-out split."""
from tiny_lm import corpus, evaluate_bpb  # noqa: F401

TIME_BUDGET = 300  # seconds of training on the real GPU; the stand-in counts steps instead
'''

AUTORESEARCH_TRAIN = '''\
"""Single-file training script (the one the agent edits), CPU stand-in."""
import time

import numpy as np

from prepare import corpus, evaluate_bpb
from tiny_lm import BigramLM, batch

# Model architecture
EMBED_DIM = 16  # width of the byte embedding
INIT_STD = 0.02  # std of the normal init
# Optimization
MATRIX_LR = 0.004  # Adam learning rate
WEIGHT_DECAY = 0.0  # decoupled weight decay
DEVICE_BATCH_SIZE = 64  # sequences per step
NUM_STEPS = 150  # training steps (the fixed budget)

t0 = time.time()
rng = np.random.default_rng(42)  # a fixed seed, as in the original
train, val = corpus()
model = BigramLM(EMBED_DIM, INIT_STD, rng)
for step in range(NUM_STEPS):
    x, y = batch(train, DEVICE_BATCH_SIZE, rng)
    loss, grads = model.loss(x, y, grad=True)
    model.adam(grads, MATRIX_LR, WEIGHT_DECAY)
    if step % 50 == 0:
        print(f"step {step:05d} | loss: {loss:.6f} | lrm: 1.00 | dt: 1ms", flush=True)
val_bpb = evaluate_bpb(model, val)
t1 = time.time()
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {t1 - t0:.1f}")
print(f"total_seconds:    {t1 - t0:.1f}")
print("peak_vram_mb:     0.0")
print(f"num_steps:        {NUM_STEPS}")
print(f"depth:            1")
'''

NANOGPT_TRAIN = '''\
"""Training script in the style of nanoGPT (defaults here, overridden by the config file)."""
import os
import time

import numpy as np

from tiny_lm import BigramLM, batch, corpus

# default config values
out_dir = 'out'
eval_interval = 50
log_interval = 25
eval_iters = 1
always_save_checkpoint = True
dataset = 'tiny'
batch_size = 32
n_embd = 8
learning_rate = 1e-3  # max learning rate
max_iters = 100
weight_decay = 0.0
beta2 = 0.95
init_std = 0.02
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items()
               if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open('configurator.py').read())  # overrides from command line or config file
config = {k: globals()[k] for k in config_keys}
# -----------------------------------------------------------------------------
np.random.seed(1337)
rng = np.random.default_rng(1337)
train, val = corpus()
model = BigramLM(n_embd, init_std, rng)
for iter_num in range(max_iters + 1):
    if iter_num % eval_interval == 0:
        tl, _ = model.loss(train[:4000], train[1:4001])
        vl, _ = model.loss(val[:-1], val[1:])
        print(f"step {iter_num}: train loss {tl:.4f}, val loss {vl:.4f}", flush=True)
    if iter_num == max_iters:
        break
    t0 = time.time()
    x, y = batch(train, batch_size, rng)
    loss, grads = model.loss(x, y, grad=True)
    model.adam(grads, learning_rate, weight_decay, beta2=beta2)
    if iter_num % log_interval == 0:
        print(f"iter {iter_num}: loss {loss:.4f}, time {(time.time() - t0) * 1000:.2f}ms")
os.makedirs(out_dir, exist_ok=True)
np.savez(os.path.join(out_dir, 'ckpt.npz'), **model.params)
'''

NANOGPT_CONFIGURATOR = '''\
"""Poor Man's Configurator, as in nanoGPT: `python train.py config/x.py --batch_size=32`."""
import sys
from ast import literal_eval

for arg in sys.argv[1:]:
    if '=' not in arg:
        assert not arg.startswith('--')
        config_file = arg
        print(f"Overriding config with {config_file}:")
        with open(config_file) as f:
            print(f.read())
        exec(open(config_file).read())
    else:
        assert arg.startswith('--')
        key, val = arg.split('=')
        key = key[2:]
        if key in globals():
            try:
                attempt = literal_eval(val)
            except (SyntaxError, ValueError):
                attempt = val
            assert type(attempt) == type(globals()[key])
            print(f"Overriding: {key} = {attempt}")
            globals()[key] = attempt
        else:
            raise ValueError(f"Unknown config key: {key}")
'''

NANOGPT_CONFIG = '''\
# train a miniature character-level model on the tiny corpus
# good for debugging and playing on a laptop

out_dir = 'out-tiny'
eval_interval = 50 # keep frequent because we'll overfit
log_interval = 25 # don't print too too often
always_save_checkpoint = False

dataset = 'tiny'
batch_size = 32
n_embd = 8

learning_rate = 1e-3 # with baby networks can afford to go a bit higher
max_iters = 100
beta2 = 0.99 # make a bit bigger because number of tokens per iter is small
'''

HYDRA_CONFIG = '''\
defaults:
  - model: small
  - _self_

optim:
  lr: 0.002  # Adam learning rate
  weight_decay: 0.0
data:
  batch_size: 32
trainer:
  max_steps: 120
'''

HYDRA_MODEL = '''\
n_embd: 8  # embedding width
init_std: 0.02
'''

HYDRA_TRAIN = '''\
"""Training with a YAML config and Hydra-style overrides: python train.py optim.lr=0.01"""
import argparse
import json

import numpy as np

from tiny_lm import BigramLM, batch, corpus


def load_yaml(path):
    """The nested mappings of a simple YAML file (what this project's configs use)."""
    root, stack = {}, [(-1, None)]
    stack[0] = (-1, root)
    for raw in open(path):
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.strip().startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            try:
                parent[key] = json.loads(value.strip())
            except ValueError:
                parent[key] = float(value) if value.strip()[0].isdigit() else value.strip()
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def compose(config_path, overrides):
    cfg = load_yaml(config_path)
    cfg["model"] = load_yaml(config_path.rsplit("/", 1)[0] + "/model/small.yaml")
    for item in overrides:
        key, value = item.lstrip("+").split("=", 1)
        *parents, last = key.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = json.loads(value)
    return cfg


parser = argparse.ArgumentParser()
parser.add_argument("--config", default="conf/config.yaml")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--eval-every", type=int, default=40)
parser.add_argument("overrides", nargs="*")
args = parser.parse_args()
cfg = compose(args.config, args.overrides)
rng = np.random.default_rng(args.seed)
train, val = corpus()
model = BigramLM(cfg["model"]["n_embd"], cfg["model"]["init_std"], rng)
for step in range(1, cfg["trainer"]["max_steps"] + 1):
    x, y = batch(train, cfg["data"]["batch_size"], rng)
    loss, grads = model.loss(x, y, grad=True)
    model.adam(grads, cfg["optim"]["lr"], cfg["optim"]["weight_decay"])
    if step % args.eval_every == 0:
        vl, _ = model.loss(val[:-1], val[1:])
        acc = float((model.params["E"][val[:-1]] @ model.params["W"]).argmax(1).__eq__(val[1:]).mean())
        print(f"epoch {step // args.eval_every}: train_loss={loss:.4f} val_loss={vl:.4f} "
              f"val_acc={acc:.4f}", flush=True)
'''


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def git_repo(root: Path) -> Path:
    """Commit everything as the third party would have (their history, not autolab's)."""
    env = {"GIT_AUTHOR_NAME": "upstream", "GIT_AUTHOR_EMAIL": "up@example.com",
           "GIT_COMMITTER_NAME": "upstream", "GIT_COMMITTER_EMAIL": "up@example.com",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "master"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "upstream"], cwd=root, check=True, env=env)
    return root


def autoresearch_like(root: Path) -> Path:
    return _write(root, {"tiny_lm.py": TINY_LM, "prepare.py": AUTORESEARCH_PREPARE,
                         "train.py": AUTORESEARCH_TRAIN, "README.md": "# autoresearch (CPU stand-in)\n"})


def nanogpt_like(root: Path) -> Path:
    return _write(root, {"tiny_lm.py": TINY_LM, "train.py": NANOGPT_TRAIN,
                         "configurator.py": NANOGPT_CONFIGURATOR,
                         "config/train_tiny.py": NANOGPT_CONFIG,
                         ".gitignore": "__pycache__/\n", "README.md": "# nanoGPT (CPU stand-in)\n"})


def hydra_like(root: Path) -> Path:
    return _write(root, {"tiny_lm.py": TINY_LM, "train.py": HYDRA_TRAIN,
                         "conf/config.yaml": HYDRA_CONFIG, "conf/model/small.yaml": HYDRA_MODEL,
                         "README.md": "# a Hydra-style project (CPU stand-in)\n"})


def scores(root: Path) -> list[dict[str, str]]:
    """The rows of ``lab-records/scores.tsv`` on ``main``."""
    text = subprocess.run(["git", "show", "main:lab-records/scores.tsv"], cwd=root,
                          capture_output=True, text=True, check=True).stdout
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def finished_candidates(root: Path) -> list[dict[str, str]]:
    return [r for r in scores(root) if r["role"] == "candidate" and r["value"]]

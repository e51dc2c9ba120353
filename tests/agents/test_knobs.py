"""Knobs in every form a real project keeps them, edited in place (formatting kept)."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from autolab.agents.base import LabDigest
from autolab.agents.knobs import (
    KnobExplorer,
    command_overrides,
    compute_kind,
    find_knobs,
    moves,
    resolve,
    set_knob,
)
from autolab.agents.knobs.configfile import yaml_knobs, yaml_scalar
from autolab_core.errors import PatchError
from autolab_core.models import Direction, Hypothesis

NANO_CONFIG = """\
# train a miniature character-level model
out_dir = 'out-tiny'
eval_interval = 50
wandb_log = False # override via command line if you like
dataset = 'tiny'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 64 # context of up to 64 previous characters

# baby GPT model :)
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0

learning_rate = 1e-3 # with baby networks can afford to go a bit higher
max_iters = 200
lr_decay_iters = 200 # make equal to max_iters usually
beta2 = 0.99
"""

ARGPARSE = """\
import argparse

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=1e-3,  # peak
                   help="learning rate")
    p.add_argument("--weight-decay", dest="wd", type=float, default=0.1)
    p.add_argument("--act", default="gelu", choices=["gelu", "relu", "silu"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("data")
    return p.parse_args()
"""

DATACLASS = """\
from dataclasses import dataclass, field
import attrs

@dataclass
class TrainConfig:
    lr: float = 3e-4  # peak learning rate
    width: int = field(default=64)
    use_bias: bool = True
    name: str = "run"

@attrs.define
class Model:
    depth: int = attrs.field(default=4)

class NotAConfig:
    x = 1
"""

YAML = """\
# @package _global_
defaults:
  - model: small
  - _self_

optim:
  lr: 1e-3       # peak learning rate
  betas: [0.9, 0.95]
  schedule: cosine  # choices: cosine, linear
  name: 'adam w'
trainer:
  max_steps: 100
  notes: |
    lr: 5
seed: 0
"""


def test_module_level_assignments_of_any_case_are_knobs() -> None:
    knobs = {k.name: k for k in find_knobs({"config/train_tiny.py": NANO_CONFIG})}
    assert knobs["learning_rate"].value == 1e-3
    assert knobs["n_layer"].compute == "depth" and knobs["n_embd"].compute == "width"
    assert knobs["batch_size"].compute == "batch" and knobs["block_size"].compute == "context"
    assert knobs["max_iters"].compute == "steps" and not knobs["max_iters"].explored
    assert not knobs["out_dir"].explored and not knobs["wandb_log"].explored
    assert knobs["learning_rate"].explored and knobs["beta2"].explored
    new = set_knob(NANO_CONFIG, knobs["learning_rate"], 2e-3)
    assert new == NANO_CONFIG.replace("learning_rate = 1e-3 #", "learning_rate = 0.002 #")


def test_argparse_defaults_are_knobs_named_by_dest_and_edited_in_place() -> None:
    knobs = {k.name: k for k in find_knobs({"train.py": ARGPARSE})}
    assert set(knobs) == {"lr", "wd", "act", "steps"}  # the positional is not a knob
    assert knobs["act"].choices == ("gelu", "relu", "silu")
    assert knobs["steps"].compute == "steps"
    assert resolve("--weight-decay", list(knobs.values())).name == "wd"
    new = set_knob(ARGPARSE, knobs["lr"], 0.002)
    assert 'default=0.002,  # peak\n                   help="learning rate")' in new
    compile(new, "train.py", "exec")


def test_dataclass_and_attrs_fields_are_knobs() -> None:
    knobs = {k.name: k for k in find_knobs({"cfg.py": DATACLASS})}
    assert set(knobs) == {"TrainConfig.lr", "TrainConfig.width", "TrainConfig.use_bias",
                          "TrainConfig.name", "Model.depth"}
    assert knobs["Model.depth"].compute == "depth"
    assert resolve("lr", list(knobs.values())).name == "TrainConfig.lr"
    new = set_knob(DATACLASS, knobs["TrainConfig.width"], 128)
    assert "width: int = field(default=128)\n" in new


def test_yaml_nested_keys_keep_comments_and_skip_lists_and_block_scalars() -> None:
    knobs = {k.name: k for k in yaml_knobs(YAML, "conf/config.yaml")}
    assert set(knobs) == {"optim.lr", "optim.schedule", "optim.name", "trainer.max_steps", "seed"}
    assert knobs["optim.lr"].value == 1e-3  # OmegaConf reads 1e-3 as a float
    assert knobs["optim.schedule"].choices == ("cosine", "linear")
    new = set_knob(YAML, knobs["optim.lr"], 1e-5)
    assert "  lr: 1.0e-05       # peak learning rate\n" in new  # YAML 1.1 needs the dot
    new = set_knob(YAML, knobs["optim.name"], "it's")
    assert "  name: 'it''s'\n" in new
    new = set_knob(YAML, knobs["optim.schedule"], "linear")
    assert "  schedule: linear  # choices" in new
    assert yaml_scalar("'it''s'") == "it's" and yaml_scalar("True") is True


def test_hydra_group_files_get_their_package_prefix() -> None:
    files = {"conf/config.yaml": "defaults:\n  - model: small\nlr: 0.1\n",
             "conf/model/small.yaml": "n_layer: 2  # depth\nn_embd: 32\n"}
    names = [k.name for k in find_knobs(files)]
    assert names == ["lr", "model.n_layer", "model.n_embd"]
    explorer = KnobExplorer(editable=list(files))
    out = explorer.write_patch(Hypothesis(id="h", title="t", changes={"model.n_layer": 3}), files)
    assert out == {"conf/model/small.yaml": "n_layer: 3  # depth\nn_embd: 32\n"}


def test_json_values_are_edited_in_place() -> None:
    text = '{\n  "optimizer": {"lr": 0.001, "betas": [0.9, 0.99]},\n  "model": {"n_layer": 4},\n' \
           '  "use_amp": true, "note": null\n}\n'
    knobs = {k.name: k for k in find_knobs({"config.json": text})}
    assert set(knobs) == {"optimizer.lr", "model.n_layer", "use_amp"}
    new = set_knob(set_knob(text, knobs["use_amp"], False), knobs["optimizer.lr"], 0.002)
    assert json.loads(new)["optimizer"]["lr"] == 0.002 and json.loads(new)["use_amp"] is False
    assert new.count("\n") == text.count("\n")


def test_toml_values_are_edited_in_place_and_comments_are_not_values() -> None:
    text = ('[optim]\nlr = 1e-3  # peak # really\nname = "a#b"  # choices: "a#b", "c"\n'
            '[[stage]]\nsteps = 3\n[model]\ndims.width = 64\nlayers = [\n  1,\n]\n')
    knobs = {k.name: k for k in find_knobs({"params.toml": text})}
    assert set(knobs) == {"optim.lr", "optim.name", "model.dims.width"}
    assert knobs["optim.lr"].text == "1e-3" and knobs["optim.name"].value == "a#b"
    new = set_knob(text, knobs["model.dims.width"], 128)
    assert tomllib.loads(new)["model"]["dims"]["width"] == 128
    assert "lr = 1e-3  # peak # really\n" in new


def test_command_overrides_fix_knobs_and_the_explorer_leaves_them_alone() -> None:
    argv = ["python", "train.py", "--lr", "0.01", "--act=relu", "+trainer.max_steps=5", "data"]
    assert command_overrides(argv) == {"--lr": "--lr 0.01", "--act": "--act=relu",
                                       "trainer.max_steps": "+trainer.max_steps=5"}
    explorer = KnobExplorer(editable=["train.py"], command=argv)
    files = {"train.py": ARGPARSE}
    assert {k.name for k in explorer.knobs(files)} == {"wd"}
    with pytest.raises(PatchError, match=re.escape("set by [run] command (--lr 0.01)")):
        explorer.write_patch(Hypothesis(id="h", title="t", changes={"lr": 0.02}), files)


def test_unknown_or_ambiguous_names_say_which_knobs_exist() -> None:
    knobs = find_knobs({"a.yaml": "model:\n  lr: 0.1\noptim:\n  lr: 0.2\n"})
    with pytest.raises(PatchError, match=re.escape("ambiguous: model.lr, optim.lr")):
        resolve("lr", knobs)
    found = "no knob 'nope'; the knobs found are: model.lr, optim.lr"
    with pytest.raises(PatchError, match=re.escape(found)):
        resolve("nope", knobs)


def test_the_explorer_proposes_and_writes_lowercase_knobs() -> None:
    files = {"config/train_tiny.py": NANO_CONFIG}
    explorer = KnobExplorer(editable=list(files), focus=["learning_rate"])
    digest = LabDigest(metric="val_loss", direction=Direction.MINIMIZE, files=files, experiments=[],
                       code_hash="c")
    ideas = explorer.propose(digest, 4)
    assert ideas[0].changes == {"learning_rate": 0.002}
    assert all("max_iters" not in h.changes and "out_dir" not in h.changes for h in ideas)
    patch = explorer.write_patch(ideas[0], files)
    assert patch["config/train_tiny.py"] == NANO_CONFIG.replace("= 1e-3", "= 0.002")


def test_two_changes_in_one_file_are_both_written() -> None:
    files = {"config/train_tiny.py": NANO_CONFIG}
    explorer = KnobExplorer(editable=list(files))
    out = explorer.write_patch(
        Hypothesis(id="h", title="t", changes={"learning_rate": 0.0005, "dropout": 0.1}), files)
    assert "learning_rate = 0.0005 #" in out["config/train_tiny.py"]
    assert "dropout = 0.1\n" in out["config/train_tiny.py"]


def test_compute_kind_reads_the_last_name_component() -> None:
    assert compute_kind("model.n_layer") == "depth"
    assert compute_kind("--batch-size") == "batch"
    assert compute_kind("trainer.max_epochs") == "steps"
    assert compute_kind("warmup_iters") == "" and compute_kind("learning_rate") == ""


def test_a_stale_span_is_refused() -> None:
    knob = find_knobs({"t.py": "lr = 0.1\n"})[0]
    with pytest.raises(PatchError, match="changed since"):
        set_knob("lr = 0.25\n", knob, 0.2)


def test_values_near_one_move_their_distance_to_one() -> None:
    knob = find_knobs({"c.py": "beta2 = 0.99\nmomentum = 0.9\n"})[0]
    assert [v for v, _ in moves(knob)] == [0.995, 0.98]

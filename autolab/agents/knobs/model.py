"""What a knob is, what it costs, and how its value is rewritten in place.

A :class:`Knob` remembers the exact character span of its value in its file, so a change
replaces only that text: formatting, comments and everything else in the file stay as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from autolab_core.errors import PatchError

Scalar = int | float | bool | str

#: Knob forms: where the value lives.
FORMS = ("module", "argparse", "field", "yaml", "json", "toml")

_I = re.IGNORECASE
#: Compute knobs, by the last component of the name. ``steps`` knobs only buy compute (more
#: steps "win" unfairly under a fixed budget) and are not explored; the others change the model
#: or the data per step and are explored, with the marker telling the fair-compute rule why.
COMPUTE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("batch", re.compile(r"^(micro_|train_|per_device_train_|global_)?(batch_size|bs)$|"
                         r"^(gradient_accumulation_steps|grad_accum(ulation)?(_steps)?)$", _I)),
    ("steps", re.compile(r"^(n_|num_|max_|train_|total_)?(steps|iters|iterations|epochs)$|"
                         r"^(num_train_epochs|time_budget|max_time|train_time|total_batch_size)$", _I)),
    ("width", re.compile(r"^(n_embd|d_model|width|hidden_size|hidden_dim|n_hidden|emb_dim|embed_dim|"
                         r"n_embed|dim|model_dim|d_ff|ffn_dim|intermediate_size|n_head|n_heads|"
                         r"num_heads|num_attention_heads)$", _I)),
    ("depth", re.compile(r"^(n_layer|n_layers|num_layers|depth|num_hidden_layers|n_blocks|"
                         r"num_blocks)$", _I)),
    ("context", re.compile(r"^(block_size|seq_len|seq_length|sequence_length|context|"
                           r"context_length|context_len|max_seq_len|ctx_len|n_ctx|max_length|"
                           r"max_position_embeddings)$", _I)),
)
#: Settings that are not hyperparameters: listed (``autolab try`` may change them) but the
#: explorer leaves them alone.
NOT_EXPLORED = re.compile(
    r"^(seed|.*_seed|eval_.*|log_.*|.*_interval|wandb.*|.*_dir|.*_path|.*_file|device|dtype|"
    r"compile|backend|init_from|always_save_checkpoint|save_.*|.*checkpoint.*|verbose|debug|"
    r"num_workers|dataset|data|resume|out|output|name|project|run_name|tag|tags|config|cfg|"
    r"config_file|config_name|config_path)$", _I)


def compute_kind(name: str) -> str:
    """``"steps"``, ``"batch"``, ``"width"``, ``"depth"``, ``"context"`` or ``""`` for a name
    such as ``max_iters``, ``model.n_layer`` or ``--batch-size``."""
    short = short_name(name)
    for kind, pattern in COMPUTE_PATTERNS:
        if pattern.match(short):
            return kind
    return ""


def short_name(name: str) -> str:
    """The last component: ``model.n_layer`` -> ``n_layer``, ``--batch-size`` -> ``batch_size``."""
    name = name.split(":")[-1].lstrip("-+").replace("-", "_")
    return re.split(r"[.]", name)[-1]


@attrs.frozen
class Knob:
    """One setting with a literal value, and the exact span of that value in its file."""

    name: str  # canonical: `lr`, `model.n_layer`, `TrainConfig.lr`; `file:name` when repeated
    value: Any
    file: str
    start: int  # character offsets of the value text in the file
    end: int
    line: int  # 1-based, for messages
    text: str  # the value as written, checked before an edit
    form: str = "module"
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # argparse option strings, e.g. ("--lr", "-l")
    set_by: str = ""  # the `[run] command` override that fixes this knob, e.g. `--lr=0.01`

    @property
    def kind(self) -> str:
        return type(self.value).__name__

    @property
    def compute(self) -> str:
        """The compute marker (see :func:`compute_kind`): what the fair-compute rule reads."""
        return compute_kind(self.name)

    @property
    def explored(self) -> bool:
        """Whether the explorer proposes moves for it by default."""
        return (not self.set_by and self.compute != "steps"
                and not NOT_EXPLORED.match(short_name(self.name)))

    def describe(self) -> str:
        extra = f", compute: {self.compute}" if self.compute else ""
        fixed = f", fixed by [run] command {self.set_by}" if self.set_by else ""
        return f"{self.name} = {self.text} ({self.file}:{self.line}, {self.form}{extra}{fixed})"


def format_value(value: Any) -> str:
    """Python spelling of a value (floats keep six significant digits)."""
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else text + ".0"
    return repr(value)


_YAML_PLAIN = re.compile(r"^[A-Za-z_][\w./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def render(knob: Knob, value: Any) -> str:
    """``value`` spelled for ``knob``'s file format, keeping the original's quoting style."""
    if knob.form in ("module", "argparse", "field"):
        return format_value(value)
    if isinstance(value, bool):
        if knob.form == "yaml" and knob.text[:1].isupper():
            return "True" if value else "False"
        return "true" if value else "false"
    if isinstance(value, float):
        text = format_value(value)
        if knob.form == "yaml" and "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e", 1)  # YAML 1.1 readers need a dot in 1.0e-05
        return text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if knob.form == "yaml":
            if knob.text.startswith("'"):
                return "'" + value.replace("'", "''") + "'"
            if not knob.text.startswith('"') and _YAML_PLAIN.match(value) \
                    and value.lower() not in _YAML_WORDS:
                return value
        return json.dumps(value)
    raise PatchError(f"{knob.name}: cannot write {value!r} into {knob.file}")


def set_knob(source: str, knob: Knob, value: Any) -> str:
    """``source`` with the text of ``knob``'s value replaced by ``value``; nothing else changes."""
    if source[knob.start:knob.end] != knob.text:
        raise PatchError(f"{knob.file} changed since {knob.name} was read; read the knobs again")
    return source[:knob.start] + render(knob, value) + source[knob.end:]


def resolve(name: str, knobs: Sequence[Knob]) -> Knob:
    """The knob called ``name``: its canonical name, an argparse flag (``--lr``), a unique last
    component (``n_layer`` for ``model.n_layer``), or the same ignoring case. Raises
    :class:`PatchError` naming the knobs found."""
    found = find(name, knobs)
    if found is not None:
        return found
    listing = ", ".join(k.name for k in knobs) or "(none)"
    raise PatchError(f"no knob {name!r}; the knobs found are: {listing}")


def find(name: str, knobs: Sequence[Knob]) -> Knob | None:
    stripped = name.lstrip("+")
    tests = (
        lambda k: k.name == stripped,
        lambda k: stripped in k.flags or ("--" + stripped) in k.flags,
        lambda k: k.name.lower() == stripped.lower(),
        lambda k: short_name(k.name) == short_name(stripped) and "." not in stripped,
        lambda k: short_name(k.name).lower() == short_name(stripped).lower() and "." not in stripped,
    )
    for test in tests:
        hits = [k for k in knobs if test(k)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise PatchError(f"{name!r} is ambiguous: " + ", ".join(k.name for k in hits))
    return None


def unique_names(knobs: Iterable[Knob]) -> list[Knob]:
    """The first knob of each name keeps it; later ones become ``file:name``."""
    seen: set[str] = set()
    out = []
    for knob in knobs:
        if knob.name in seen:
            knob = attrs.evolve(knob, name=f"{knob.file}:{knob.name}")
        seen.add(knob.name)
        out.append(knob)
    return out


def line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def choices_from_comment(comment: str) -> tuple[str, ...]:
    """``# choices: a, b`` (or quoted words in the comment) -> ("a", "b")."""
    match = re.search(r"choices?\s*[:=]\s*(.+)$", comment, re.IGNORECASE)
    found = ([c.strip().strip("'\"") for c in re.split(r"[,|/]", match.group(1))]
             if match else re.findall(r"""["']([^"']+)["']""", comment))
    return tuple(dict.fromkeys(c for c in found if c))

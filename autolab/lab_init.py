"""``autolab init`` that looks at the repository before writing ``autolab.toml``.

It finds the likely training entry point and its config files, lists their knobs, optionally
runs the training once under a short time limit (:mod:`autolab.lab_probe`) to propose the
metric pattern from what it printed, and writes a commented ``autolab.toml`` (validated by
:mod:`autolab_core.config`). Committing keeps secrets out: files that look like credentials (by
name or content) and large files are added to ``.git/info/exclude`` (local, never committed),
so only files git would track are committed, and the report says what was skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from autolab.agents.knobs import find_knobs
from autolab.agents.knobs.model import Knob
from autolab.lab_probe import MetricGuess, ProbeResult, guess_from_source, guess_metrics, probe
from autolab_core.config import CONFIG_FILE, parse_config
from autolab_core.errors import ConfigError
from autolab_core.lab import Lab
from autolab_core.secrets import secret_values

SECRET_NAMES = re.compile(r"(^|/)(\.env(\..+)?|\.netrc|\.pypirc|\.npmrc|id_(rsa|dsa|ecdsa|ed25519)[^/]*|"
                          r"credentials[^/]*|[^/]*\.(pem|key|p12|pfx|keystore|jks)|"
                          r"[^/]*secret[^/]*|service[-_]account[^/]*\.json)$", re.IGNORECASE)
SECRET_TEXT = re.compile(r"hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|"
                         r"AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}|"
                         r"-----BEGIN [A-Z ]*PRIVATE KEY-----|"
                         r"""(?i:(token|secret|password|api_?key)\s*[=:]\s*["'][^"'\s]{12,}["'])""")
MAX_FILE_BYTES = 5 * 1024 * 1024
_SKIP_DIRS = {".git", ".venv", "venv", "env", "node_modules", "__pycache__", "site-packages",
              ".autolab", "build", "dist", ".tox", ".mypy_cache", ".pytest_cache", "wandb"}
_ENTRY_NAMES = ("train.py", "main.py", "run.py", "train_gpt.py", "scripts/train.py", "src/train.py")


@attrs.frozen
class Proposal:
    """What ``autolab init`` found and proposes."""

    command: tuple[str, ...]
    entry: str | None
    editable: tuple[str, ...]
    knobs: tuple[Knob, ...]
    metric: MetricGuess | None
    others: tuple[MetricGuess, ...] = ()
    probe: ProbeResult | None = None
    alternatives: tuple[str, ...] = ()  # other config files the command could name


def _files(root: Path, suffixes: tuple[str, ...], depth: int = 3) -> list[str]:
    """Files under ``root`` (at most ``depth`` levels), skipping hidden, virtual-env and build
    folders without walking into them."""
    out = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        level = len(rel_folder.parts)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")
                         and level + 1 < depth)
        out += [(rel_folder / n).as_posix() for n in names
                if n.endswith(suffixes) and not n.startswith(".")]
    return sorted(out)


def find_entry_point(root: Path) -> str | None:
    """The likely training script: a conventional name, else a ``train*.py``, else a script
    with ``if __name__ == "__main__"`` that parses arguments."""
    for name in _ENTRY_NAMES:
        if (root / name).is_file():
            return name
    scripts = [p for p in _files(root, (".py",)) if not p.startswith(("tests/", "test/"))]
    named = [p for p in scripts if re.search(r"(^|/)train[^/]*\.py$", p)]
    if named:
        return min(named, key=lambda p: (p.count("/"), p))
    for path in scripts:
        text = (root / path).read_text(errors="replace")
        if "__main__" in text and re.search(r"argparse|sys\.argv|hydra|click|fire", text):
            return path
    return None


def find_config_files(root: Path, entry: str | None) -> list[str]:
    """Config files the entry point reads: nanoGPT-style ``config/*.py``, Hydra ``conf/``,
    and YAML / JSON / TOML files under ``config(s)/`` or named in the entry point."""
    entry_text = (root / entry).read_text(errors="replace") if entry else ""
    out = []
    for path in _files(root, (".py", ".yaml", ".yml", ".json", ".toml")):
        top = path.split("/")[0]
        if path == entry or path == CONFIG_FILE or path == "pyproject.toml":
            continue
        in_config_dir = top in ("config", "configs", "conf", "cfg") and "/" in path
        if in_config_dir or (not path.endswith(".py") and Path(path).name in entry_text):
            out.append(path)
    return out


def _config_rank(path: str) -> tuple[int, int, str]:
    """Training configs first, small / CPU-friendly ones first among them."""
    name = Path(path).name.lower()
    return ("train" not in name, not re.search(r"tiny|small|char|debug|cpu|mini", name), path)


def _entry_runs_config(root: Path, entry: str) -> bool:
    """True when the script execs a Python config file given on its command line (nanoGPT)."""
    text = (root / entry).read_text(errors="replace")
    return bool(re.search(r"configurator\.py|exec\(open\(", text)) or (root / "configurator.py").exists()


def propose(root: Path, command: str | None = None, run_probe: bool = False,
            probe_seconds: float = 60.0) -> Proposal:
    """Look at ``root`` (and run the training once when ``run_probe``) and propose a config."""
    entry = find_entry_point(root)
    configs = find_config_files(root, entry)
    py_configs = sorted((c for c in configs if c.endswith(".py")), key=_config_rank)
    if command:
        argv = tuple(shlex.split(command))
    elif entry and py_configs and _entry_runs_config(root, entry):
        argv = ("python", entry, py_configs[0])
    else:
        argv = ("python", entry or "train.py")
    alternatives: list[str] = []
    if entry and py_configs and _entry_runs_config(root, entry):
        editable = [py_configs[0]]  # nanoGPT: the config file's values win over the script's
        alternatives = py_configs[1:]
    else:
        editable = [entry or "train.py", *configs]  # train.py: a placeholder to edit
    files = {p: (root / p).read_text(errors="replace") for p in editable if (root / p).is_file()}
    knobs = tuple(find_knobs(files, editable, argv))
    result = probe(root, argv, probe_seconds) if run_probe else None
    guesses = guess_metrics(result.lines) if result else []
    if not guesses and entry:
        static = guess_from_source((root / entry).read_text(errors="replace"))
        guesses = [static] if static else []
    return Proposal(command=argv, entry=entry, editable=tuple(editable), knobs=knobs,
                    metric=guesses[0] if guesses else None, others=tuple(guesses[1:]),
                    probe=result, alternatives=tuple(alternatives))


def _toml_str(text: str) -> str:
    return f"'{text}'" if "'" not in text and "\n" not in text else json.dumps(text)


def render_config(root: Path, p: Proposal) -> str:
    """A commented ``autolab.toml`` for ``p`` that parses as it is."""
    metric = p.metric
    lines = [
        "# autolab lab configuration, proposed by `autolab init` from what it found here.",
        "# Check each line (see docs/own-lab.md), then: autolab run -n 3",
        "", "[lab]", f"name = {json.dumps(root.name)}", "", "[run]",
        f"# The training command, run in a checkout of each experiment (entry point: {p.entry}).",
        "# `python` is the interpreter that runs autolab, unless you change it here.",
        f"command = {json.dumps(shlex.join(p.command))}",
    ]
    if p.probe is not None and p.probe.finished:
        limit = max(60, int(p.probe.seconds * 3) + 30)
        lines.append(f'time_limit = "{limit}s"  # the probe run took {p.probe.seconds:.0f} s')
    else:
        note = (f"the probe was stopped after {p.probe.seconds:.0f} s" if p.probe is not None
                and p.probe.returncode is None else "one run's wall-clock limit")
        lines.append(f'time_limit = "30m"  # {note}')
    lines += ["", "[metric]"]
    if metric is None:
        lines += ["# No metric was recognised: make the script print e.g. `val_loss: 1.23` and",
                  "# set the pattern (a regex whose first group is the number).",
                  'name = "val_loss"', 'direction = "minimize"', 'source = "pattern"',
                  "pattern = '^val_loss:\\s*([0-9.eE+-]+)'"]
    else:
        seen = (f"last value {metric.last:g} in the probe output" if metric.last is not None
                else "named in a print statement of the entry point")
        lines.append(f"# Read from the script's output ({seen}).")
        lines.append("# Results read from the output are marked untrusted: see docs/trust.md for a")
        lines.append("# protected eval_command.")
        for other in p.others[:6]:
            lines.append(f"# also printed: {other.name} (last {other.last:g}), pattern "
                         f"{_toml_str(other.pattern)}, {other.direction}")
        lines += [f"name = {json.dumps(metric.config_name)}",
                  f"direction = {json.dumps(metric.direction)}",
                  'source = "pattern"', f"pattern = {_toml_str(metric.pattern)}"]
    lines += ["", "[files]", "# Files patches may change. The knobs found in them:"]
    for knob in p.knobs[:40]:
        lines.append(f"#   {knob.describe()}" + ("" if knob.explored else "  [not explored]"))
    if len(p.knobs) > 40:
        lines.append(f"#   ... and {len(p.knobs) - 40} more")
    if p.alternatives:
        lines.append("# Other config files (name one in [run] command and here instead): "
                     + ", ".join(p.alternatives[:10]))
    lines += [f"editable = {json.dumps(list(p.editable))}", "protected = []", "",
              "[promotion]", "noise_runs = 3  # baseline seeds of main that measure the noise",
              "k_sigma = 2.0  # a win must beat main by more than k_sigma times that noise",
              "# The noise floor when baselines agree exactly (a script that fixes its own seed):",
              "min_sigma = 0.0", "", "[search]",
              "# exclude = []  # knobs the explorer must not touch; focus = [] to try some first",
              ""]
    text = "\n".join(lines)
    parse_config(tomllib.loads(text), root)  # the proposal must be valid as written
    return text


def untracked_files(root: Path) -> list[str]:
    """Files git would add: untracked and not ignored."""
    out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return [p for p in out.split("\0") if p]


def why_skip(root: Path, rel: str, secrets: Sequence[str] = ()) -> str | None:
    """Why ``rel`` must not be committed (a secret or a large file), or None."""
    if SECRET_NAMES.search(rel):
        return "looks like a secret (name)"
    path = root / rel
    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_FILE_BYTES:
        return f"large file ({size / 2**20:.0f} MiB)"
    try:
        text = path.read_text(errors="ignore")
    except OSError:
        return None
    if SECRET_TEXT.search(text) or any(s in text for s in secrets):
        return "contains what looks like a token or key"
    return None


def exclude_unsafe(root: Path, written_by_probe: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Add the untracked files that must not be committed (secrets, large files, what the
    probe run wrote) to ``.git/info/exclude``; returns (path, why) for each."""
    skipped = []
    secrets = secret_values()
    for rel in untracked_files(root):
        why = "written by the probe run" if rel in written_by_probe else why_skip(root, rel, secrets)
        if why:
            skipped.append((rel, why))
    if skipped:
        exclude = root / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        old = exclude.read_text() if exclude.exists() else ""
        new = [f"/{glob_escape(rel)}" for rel, _ in skipped]
        exclude.write_text(old + ("" if old.endswith("\n") or not old else "\n")
                           + "# autolab init: not committed (secrets, large files)\n"
                           + "\n".join(new) + "\n")
    return skipped


def glob_escape(rel: str) -> str:
    return re.sub(r"([*?\[\]!#\\ ])", r"\\\1", rel)


def init_lab(root: Path, command: str | None = None, run_probe: bool = False,
             probe_seconds: float = 60.0, say: Callable[[str], None] = print) -> Lab:
    """Look at ``root``, write ``autolab.toml`` (unless one exists), and make it a lab."""
    root = root.resolve()
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; create it or point at your repository")
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    config = root / CONFIG_FILE
    before = set(untracked_files(root))
    if config.exists():
        say(f"{CONFIG_FILE} exists: keeping it (delete it to get a proposal)")
    else:
        if run_probe:
            say(f"probing: running the training once (at most {probe_seconds:g} s) ...")
        p = propose(root, command, run_probe, probe_seconds)
        _report(p, say)
        config.write_text(render_config(root, p))
    written = sorted(set(untracked_files(root)) - before - {CONFIG_FILE})
    skipped = exclude_unsafe(root, written)
    for rel, why in skipped:
        say(f"not committed: {rel} ({why}); listed in .git/info/exclude")
    return Lab.init(root)


def _report(p: Proposal, say: Callable[[str], None]) -> None:
    say(f"entry point: {p.entry or '(none found)'}; command: {shlex.join(p.command)}")
    if p.probe is not None:
        state = ("finished" if p.probe.finished else "stopped at the time limit"
                 if p.probe.returncode is None else f"exited with code {p.probe.returncode}")
        say(f"probe: {state} after {p.probe.seconds:.1f} s")
        if p.probe.returncode not in (0, None):
            say("last lines:\n  " + "\n  ".join(p.probe.lines[-10:]))
    if p.metric is not None:
        shown = [p.metric, *p.others]
        say("metrics: " + ", ".join(f"{g.name} = {g.last:g}" if g.last is not None else g.name
                                    for g in shown) + f" -> proposing {p.metric.name!r}")
    else:
        say("metrics: none recognised; set [metric] pattern in autolab.toml")
    explored = [k.name for k in p.knobs if k.explored]
    say(f"knobs: {len(p.knobs)} found in {', '.join(p.editable) or '(no files)'}; explored: "
        + (", ".join(explored[:20]) or "(none)"))

"""Adversarial patches through the real loop: a tiny copy of the reference lab, `autolab run`
(real CLI, local backend, runner, gate), and each cheat of tests/trust/cheats.py given as an LLM
worker's edit (queued with its edits, as `autolab try` queues ideas; the LLM worker applies
and validates them; the Researcher is tests/llm_scripted_server.py, a local stand-in speaking
the OpenAI wire format, which proposes nothing more).

Every cheat must end not promoted, with the attempt recorded with a reason or a flag. Several
defences live in the runner and the loop (see docs/trust.md, "Defences"); the test names say
which class each one is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from autolab.training import create_reference_lab
from autolab_core.lab import Lab
from tests.llm_scripted_server import ScriptedLLMServer
from tests.trust import cheats

# Two `autolab run` sessions of real torch runs: about 3 minutes on 2 idle cores, much more on
# a shared machine.
pytestmark = pytest.mark.timeout(2400)

TINY = {"STEPS": 20, "WARMUP_STEPS": 5}
PROMOTION = """[promotion]
noise_runs = 2
k_sigma = 2.0
confirm_runs = 1
min_delta = 0.005
min_sigma = 0.005
"""

CLASSES: dict[str, list[dict[str, str]]] = {
    "monkeypatch the scoring functions at import": cheats.MONKEYPATCH_EVAL,
    "train inside the evaluation": cheats.TRAIN_IN_EVAL,
    "causal only on the checked batch": cheats.PEEK_UNLESS_CHECKED,
    "causal only on check copies": cheats.PEEK_ON_NATURAL_TEXT,
    "overwrite the held-out file and restore it": cheats.OVERWRITE_AND_RESTORE_VAL,
    "train on the held-out windows": cheats.READ_HELDOUT_IN_TRAINING,
    "look the answers up in the held-out file during eval": cheats.LOOKUP_HELDOUT_IN_EVAL,
    "swap prepare.py after training": cheats.SWAP_PREPARE_AFTER_TRAINING,
    "forge result lines with the nonce": cheats.FORGED_RESULT,
    "shadow modules and bytecode in the tree": cheats.SHADOW_MODULES,
    "ignore the seed": cheats.FIXED_SEED,
    "inject PYTHONPATH and PYTHONSTARTUP": cheats.ENV_INJECTION,
    "raise the time limit": cheats.LONGER_TIME_LIMIT,
}


def make_lab(root: Path, server_url: str) -> Lab:
    create_reference_lab(root, overrides=TINY)
    toml = (root / "autolab.toml").read_text()
    head, _, tail = toml.partition("[promotion]")
    tail = tail.split("[budget]", 1)[1]
    (root / "autolab.toml").write_text(
        head + PROMOTION + "\n[budget]" + tail + f"""
[run.env]
OMP_NUM_THREADS = "1"

[backend]
name = "local"

[llm]
name = "openai-compatible"
[llm.openai-compatible]
base_url = "{server_url}/v1"
model = "scripted"
backoff_s = 0
""")
    return Lab.init(root)


def queue(lab: Lab, classes: dict[str, list[dict[str, str]]]) -> None:
    with open(lab.state_dir / "inbox.jsonl", "a") as fh:
        for title, edits in classes.items():
            fh.write(json.dumps({"id": f"cheat-{uuid.uuid4().hex[:8]}", "title": title,
                                 "source": "llm", "edits": edits}) + "\n")


def run_session(tmp_path: Path, classes: dict[str, list[dict[str, str]]]) -> tuple[Lab, str]:
    # Edits to files that are not editable are rejected before they run and do not count
    # towards --max-experiments; the Researcher proposes nothing more.
    runnable = sum(all(e["file"] == "train.py" for e in edits) for edits in classes.values())
    with ScriptedLLMServer(['{"hypotheses": []}'] * 50) as server:
        lab = make_lab(tmp_path / "lab", server.url)
        queue(lab, classes)
        done = subprocess.run(
            [sys.executable, "-m", "autolab", "run", "--lab", str(lab.root), "--workers", "2",
             "--max-experiments", str(runnable), "--strategy", "llm"],
            capture_output=True, text=True, timeout=2000,
        )
    return Lab(lab.root), done.stdout + done.stderr


#: Classes whose defence is the worker's edit check: their rejection is the expected record.
EDIT_REJECTED = {"inject PYTHONPATH and PYTHONSTARTUP", "raise the time limit"}

Rows = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rows, str]:
    lab, output = run_session(tmp_path_factory.mktemp("adversarial"), CLASSES)
    rows: Rows = {}
    for row in lab.scores():
        if row["role"] == "candidate":
            rows.setdefault(row["title"], []).append(row)
    return rows, output


def attempts(rows: Rows, title: str, output: str) -> list[dict[str, Any]]:
    """The recorded attempts of one cheat that really ran (an edit that no longer applies
    after another candidate moved main never ran, and proves nothing)."""
    assert title in rows, f"the attempt {title!r} was not recorded\n{output[-3000:]}"
    assert all(r["verdict"] != "promoted" for r in rows[title]), rows[title]
    ran = [r for r in rows[title] if not r["reason"].startswith("invalid patch")]
    assert ran, f"{title!r} never ran: {rows[title]}"
    return ran


@pytest.mark.parametrize("title", [t for t in CLASSES if t not in EDIT_REJECTED])
def test_cheat_is_not_promoted_and_is_recorded(session: tuple[Rows, str], title: str) -> None:
    rows, output = session
    for row in attempts(rows, title, output):
        assert row["reason"] or row["flags"], f"no reason or flag recorded: {row}"


@pytest.mark.parametrize("title", sorted(EDIT_REJECTED))
def test_edits_outside_the_editable_files_are_rejected(
    session: tuple[Rows, str], title: str,
) -> None:
    rows, output = session
    assert title in rows, output[-3000:]
    for row in rows[title]:
        assert row["status"] == "rejected" and "not an editable file" in row["reason"], row


def test_a_candidate_that_ignores_the_seed_is_flagged(session: tuple[Rows, str]) -> None:
    """Runs of one candidate on different seeds that agree bit for bit ignore the seed the
    runner sets: a fixed lucky seed is not a win, and the attempt must be flagged for it."""
    rows, output = session
    assert any("seed" in r["flags"].lower() for r in attempts(rows, "ignore the seed", output))


def test_job_cannot_move_main(tmp_path: Path) -> None:
    """`git update-ref refs/heads/main HEAD` from the job: main stays where the loop put it,
    and the run stops with an alert naming the move."""
    lab, output = run_session(tmp_path, {"move main": cheats.MOVE_MAIN})
    # main's own records may be what the job replaced: read the orchestrator's state
    states = [json.loads(p.read_text()) for p in (lab.state_dir / "experiments").glob("*.json")]
    # the cheat itself (knob candidates may be queued beside it while the LLM works)
    candidates = [e for e in states if e.get("role") == "candidate" and e.get("commit")
                  and e.get("hypothesis", {}).get("title") == "move main"]
    assert candidates, output[-3000:]
    commit = str(candidates[0]["commit"])
    main = lab.main_commit()
    assert not (main.startswith(commit) or commit.startswith(main)), output[-3000:]
    assert candidates[0].get("verdict") != "promoted"
    if "moved outside autolab" not in output:
        # No alert: the job had no repository to move main in (an exported tree with no .git,
        # GIT_CEILING_DIRECTORIES, and under bwrap/landlock the lab is hidden), so it ran
        # without touching any ref. tests/run/test_ref_tamper.py makes a job reach the lab by
        # its absolute path without a sandbox and checks the alert.
        assert candidates[0]["history"][-1]["status"] in ("finished", "failed"), output[-3000:]
        assert "ALERT" not in output, output[-3000:]


@pytest.mark.parametrize("title", [t for t, e in CLASSES.items() if e[0]["file"] == "train.py"])
def test_every_cheat_is_a_valid_worker_edit(title: str) -> None:
    """The cheats pass the worker's own edit checks and compile: they really run."""
    from autolab.agents.edits import apply_edits
    from autolab.training import reference_lab_path

    files = {"train.py": (reference_lab_path() / "train.py").read_text()}
    new = apply_edits(files, CLASSES[title], ["train.py"], protected=["prepare.py"])
    compile(new["train.py"], "train.py", "exec")

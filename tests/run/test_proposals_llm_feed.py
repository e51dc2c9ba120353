"""No slot waits on the LLM: while a slow model thinks, knob-explorer candidates run; when its
idea arrives, it takes the next free slot ahead of the knob candidates already queued.

The real CLI (`autolab run`), the local backend and a toy lab (tests/toylab.py, flat: no knob
matters, so nothing is promoted and main stays put) with an OpenAI-compatible server on
127.0.0.1 (tests/llm_scripted_server.py, a local stand-in speaking the real
`/v1/chat/completions` wire format). The Researcher's first answer is held back until the test
has seen two knob candidates submitted and a third queued: with a pipeline that waits on the LLM, that never
happens and the test fails on the recorded sources and times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from autolab_core.lab import Lab
from autolab_core.models import ExperimentStatus
from autolab_core.vocab import Role
from tests.llm_scripted_server import ScriptedLLMServer
from tests.toylab import make_toy_lab

SUBMITTED = ExperimentStatus.SUBMITTED


def llm_config(url: str) -> str:
    return f"""
[llm]
name = "openai-compatible"
[llm.openai-compatible]
base_url = "{url}/v1"
model = "scripted"
backoff_s = 0
"""


def watch(root: Path, gate: threading.Event, stop: threading.Event) -> None:
    """Open the gate once two knob candidates have been submitted and another one waits."""
    while not stop.is_set() and not gate.is_set():
        try:
            exps = Lab(root).load_experiments()
        except Exception:  # a state file being written: look again
            exps = []
        knobs = [e for e in exps if e.role == Role.CANDIDATE and e.hypothesis.source == "knob"
                 and e.at(SUBMITTED) is not None]
        waiting = [e for e in exps if e.role == Role.CANDIDATE and e.hypothesis.source == "knob"
                   and e.commit and e.status is ExperimentStatus.QUEUED]
        if len(knobs) >= 2 and waiting:
            gate.set()
        stop.wait(0.2)


def test_knob_candidates_keep_the_slots_busy_while_the_llm_thinks(tmp_path: Path) -> None:
    gate, stop = threading.Event(), threading.Event()
    idea = {"title": "Triple the learning rate", "rationale": "short runs favour larger steps",
            "expected_effect": "val_bpb -0.3", "risk": "low", "citation": ""}
    edit = {"edits": [{"file": "train.py", "search": "LR = 0.01  # learning rate",
                       "replace": "LR = 0.03  # learning rate"}], "summary": "LR x3"}
    replies = [{"text": json.dumps({"hypotheses": [idea]}), "wait": gate, "wait_s": 240},
               json.dumps(edit), *[json.dumps({"hypotheses": []})] * 20]
    with ScriptedLLMServer(replies) as server:
        lab = make_toy_lab(tmp_path / "lab", flat=True, extra_config=llm_config(server.url))
        watcher = threading.Thread(target=watch, args=(lab.root, gate, stop), daemon=True)
        watcher.start()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "autolab", "run", "--lab", str(lab.root), "--workers", "2",
                 "--max-experiments", "6", "--strategy", "llm"],
                capture_output=True, text=True, timeout=600)
        finally:
            stop.set()
            gate.set()
            watcher.join()
        assert done.returncode == 0, done.stdout + done.stderr

    candidates = [e for e in Lab(lab.root).load_experiments() if e.role == Role.CANDIDATE]
    llm = [e for e in candidates if e.hypothesis.source == "llm"]
    assert len(llm) == 1, done.stdout
    (idea_exp,) = llm
    created = idea_exp.at(ExperimentStatus.QUEUED)
    assert created is not None and idea_exp.at(SUBMITTED) is not None, done.stdout
    knobs = [e for e in candidates if e.hypothesis.source == "knob"]
    busy_before = [e for e in knobs if (e.at(SUBMITTED) or time.time()) < created]
    assert len(busy_before) >= 2, "both slots ran knob candidates before the LLM idea existed"
    # It jumped the queue: a knob candidate queued before it was submitted after it (or never).
    queued_before = [e for e in knobs if (e.at(ExperimentStatus.QUEUED) or 0) < created
                     and (e.at(SUBMITTED) is None or e.at(SUBMITTED) > created)]  # type: ignore[operator]
    # Whether a knob candidate was still waiting when the idea arrived depends on timing; when
    # one was, it went after the idea (Ledger.ready's order is unit-tested in test_ledger.py).
    assert all(e.at(SUBMITTED) is None or e.at(SUBMITTED) > idea_exp.at(SUBMITTED)  # type: ignore[operator]
               for e in queued_before), done.stdout
    assert "LR = 0.03" in Lab(lab.root).read(idea_exp.commit or "", "train.py")

"""`autolab run` end to end with an LLM: the real CLI, the local backend, a local paper source,
and an OpenAI-compatible server on 127.0.0.1 (tests/llm_scripted_server.py: a local stand-in
that speaks the real `/v1/chat/completions` wire format and returns prepared answers).

The script includes a 429, a malformed answer and an edit whose search text is not in the
file: each must end in a retry or a recorded rejection, and the promoted change must be
traceable on main from the paper to the hypothesis, the conversation, the patch and the runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autolab_core.lab import RECORDS, Lab
from tests.llm_scripted_server import ScriptedLLMServer
from tests.toylab import make_toy_lab

NOTE = """---
id: warmup-lr-2024
title: Larger learning rates for tiny models
url: https://example.org/larger-lr
---
Tiny transformers trained for a few hundred steps tolerate and benefit from a learning rate
several times larger than the usual defaults.
"""


def hypotheses(*items: dict) -> str:
    return json.dumps({"hypotheses": list(items)})


def idea(title: str, citation: str = "") -> dict:
    return {"title": title, "rationale": "short runs favour larger steps",
            "expected_effect": "val_bpb -0.3", "risk": "low", "citation": citation}


def edits(search: str, replace: str) -> str:
    return json.dumps({"edits": [{"file": "train.py", "search": search, "replace": replace}],
                       "summary": "change LR"})


def test_autolab_run_with_llm_and_papers(tmp_path: Path) -> None:
    replies = [
        {"status": 429, "headers": {"Retry-After": "0"}, "body": {"error": "slow down"}},
        "this is not JSON",  # malformed: fed back, retried
        hypotheses(idea("Triple the learning rate", "warmup-lr-2024"),
                   idea("Halve the width")),
        edits("LR = 0.01  # learning rate", "LR = 0.03  # learning rate"),
        edits("WIDTH = 999", "WIDTH = 4"),  # search text not in the file: retried...
        edits("WIDTH = 999", "WIDTH = 4"),  # ...and rejected with the reason
        *[hypotheses()] * 30,
    ]
    with ScriptedLLMServer(replies) as server:
        config = f"""
[llm]
name = "openai-compatible"
[llm.openai-compatible]
base_url = "{server.url}/v1"
model = "scripted"
backoff_s = 0
[llm.worker]
max_attempts = 2
[papers]
sources = ["local"]
[papers.local]
path = "notes"
"""
        lab = make_toy_lab(tmp_path / "lab", extra_config=config)
        (lab.root / "notes").mkdir()
        (lab.root / "notes" / "larger-lr.md").write_text(NOTE)
        subprocess.run(["git", "-C", str(lab.root), "add", "notes"], check=True)
        subprocess.run(["git", "-C", str(lab.root), "commit", "-qm", "notes"], check=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                            "PATH": "/usr/bin:/bin"})
        done = subprocess.run(
            [sys.executable, "-m", "autolab", "run", "--lab", str(lab.root), "--workers", "2",
             "--max-experiments", "2", "--strategy", "llm"],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        paths = [r.path for r in server.requests]
        assert paths and all(p == "/v1/chat/completions" for p in paths)

    lab = Lab(lab.root)
    rows = {r["title"]: r for r in lab.scores() if r["role"] == "candidate"}
    lr = rows["Triple the learning rate"]
    assert lr["verdict"] == "promoted" and lr["citation"] == "warmup-lr-2024", done.stdout
    assert lr["source"] == "llm" and lr["conversation"]
    width = rows["Halve the width"]
    assert width["status"] == "rejected" and "WIDTH = 999" in width["reason"]

    main = lab.main_commit()
    assert "LR = 0.03" in lab.read(main, "train.py")
    record = json.loads(lab.read(main, f"{RECORDS}/experiments/{lr['id']}.json"))
    assert record["hypothesis"]["edits"][0]["replace"] == "LR = 0.03  # learning rate"
    conversation = json.loads(lab.read(main, f"{RECORDS}/conversations/{lr['conversation']}.json"))
    assert "warmup-lr-2024" in json.dumps(conversation)  # the paper was in the prompt
    message = subprocess.run(["git", "-C", str(lab.root), "log", "--format=%B", "main",
                              f"--grep=promote {lr['id']}"],
                             capture_output=True, text=True, check=True).stdout
    assert f"promote {lr['id']}" in message and "citation: warmup-lr-2024" in message
    assert f"{RECORDS}/conversations/{lr['conversation']}.json" in message

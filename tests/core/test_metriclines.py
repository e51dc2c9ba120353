"""autolab_core.metriclines: the AUTOLAB_METRIC / AUTOLAB_RESULT line format."""

from __future__ import annotations

import math

import pytest

from autolab_core.metriclines import (
    METRIC_PREFIX,
    RESULT_PREFIX,
    find_result,
    format_metric_line,
    format_result_line,
    iter_pattern_values,
    parse_metric_line,
)


def test_metric_line_round_trip() -> None:
    line = format_metric_line(10, {"train_loss": 2.31, "lr": 3e-4, "tokens": 4096})
    assert line.startswith(METRIC_PREFIX) and "\n" not in line
    assert parse_metric_line(line) == (10, {"train_loss": 2.31, "lr": 3e-4, "tokens": 4096.0})


def test_nan_and_inf_are_kept_not_dropped() -> None:
    line = format_metric_line(3, {"loss": math.nan, "grad": math.inf, "low": -math.inf})
    assert "NaN" not in line  # plain JSON on the wire, no NaN literal
    step, values = parse_metric_line(line) or (None, {})
    assert step == 3 and math.isnan(values["loss"])
    assert values["grad"] == math.inf and values["low"] == -math.inf


def test_prefix_may_follow_other_output_on_the_line() -> None:
    assert parse_metric_line('[rank0] 12:00 AUTOLAB_METRIC {"step": 1, "x": 2}') == (1, {"x": 2.0})


@pytest.mark.parametrize(
    "line",
    ["", "train_loss 2.3", "AUTOLAB_METRIC", "AUTOLAB_METRIC {not json",
     'AUTOLAB_METRIC {"step": 1, "x": 2} trailing', "AUTOLAB_METRIC [1, 2]",
     'AUTOLAB_METRIC {"x": 2}', 'AUTOLAB_METRIC {"step": "ten", "x": 2}',
     'AUTOLAB_METRIC {"step": 1, "x": "abc"}', 'AUTOLAB_METRIC {"step": 1, "x": null}',
     'AUTOLAB_METRIC {"step": 1, "x": {"y": 1}}', 'AUTOLAB_METRICS {"step": 1, "x": 2}'],
)
def test_malformed_metric_lines_are_skipped(line: str) -> None:
    assert parse_metric_line(line) is None


def test_result_line_carries_the_nonce_and_the_last_one_wins() -> None:
    nonce = "n-5f3a"
    text = "\n".join([
        "AUTOLAB_METRIC {\"step\": 1, \"loss\": 3}",
        format_result_line({"nonce": nonce, "value": 2.0}),
        "AUTOLAB_RESULT {broken",
        format_result_line({"nonce": "forged", "value": 0.0}),  # printed by a patch
        format_result_line({"value": -1.0}),  # no nonce at all
        RESULT_PREFIX + '["nonce", "n-5f3a"]',  # not an object
        format_result_line({"nonce": nonce, "value": 1.5, "metric": "val_bpb"}),
        "bye",
    ])
    assert find_result(text, nonce) == {"nonce": nonce, "value": 1.5, "metric": "val_bpb"}
    assert find_result(text, "other") is None
    assert find_result("no results here", nonce) is None


def test_result_line_is_one_sorted_line() -> None:
    line = format_result_line({"z": 1, "a": "x\ny"})
    assert line == 'AUTOLAB_RESULT {"a":"x\\ny","z":1}'
    assert find_result("prefix " + line.replace('"z":1', '"nonce":"k","z":1'), "k") is not None


def test_pattern_values() -> None:
    text = "step 1\nval_bpb: 1.50\nval_bpb: oops\nval_bpb: 1.25e0\nval_bpb:nan\nother: 9\n"
    values = list(iter_pattern_values(text, r"^val_bpb:\s*(\S+)"))
    assert values[:2] == [1.5, 1.25] and math.isnan(values[2]) and len(values) == 3
    assert list(iter_pattern_values(text, r"^val_bpb")) == []  # no group: nothing, no crash
    assert list(iter_pattern_values("", r"(\d+)")) == []

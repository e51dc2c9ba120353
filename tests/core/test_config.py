"""autolab_core.config: every section, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from autolab_core.config import (
    CONFIG_FILE,
    BudgetSection,
    FilesSection,
    LabSection,
    MetricSection,
    PromotionSection,
    RunSection,
    SearchSection,
    load_config,
    parse_config,
    parse_duration,
    parse_options,
)
from autolab_core.errors import ConfigError
from autolab_core.models import Direction

ROOT = Path("/labs/tiny")
EVAL = {"eval_command": "python eval.py"}  # the trusted default source needs an eval command


def cfg(**tables: Any) -> Any:
    raw = {"run": {**EVAL, **tables.pop("run", {})}, **tables}
    return parse_config(raw, ROOT)


def test_minimal_config_has_documented_defaults() -> None:
    config = cfg()
    assert config.backend == "local" and config.backend_options == {}
    assert config.llm is None and config.paper_sources == []
    assert config.metric_store == "parquet"
    assert config.run.time_limit == 1800.0 and config.run.seed_env == "AUTOLAB_SEED"
    assert config.run.argv() == ("python", "train.py")
    assert config.run.eval_argv() == ("python", "eval.py")
    assert config.metric == MetricSection() and config.metric.dir is Direction.MINIMIZE
    assert config.files.editable == ["train.py"] and config.files.protected == []
    assert config.budget == BudgetSection() and config.promotion == PromotionSection()
    assert config.search.strategy == "auto"
    assert config.name == "tiny"  # no [lab] name: the folder's name


def test_full_config_every_section() -> None:
    raw = {
        "lab": {"name": "nanogpt", "description": "tiny shakespeare"},
        "run": {"command": ["python", "train.py", "--fast"], "eval_command": "python ev.py 'a b'",
                "time-limit": "15m", "env": {"OMP_NUM_THREADS": "1"}, "seed_env": "SEED"},
        "metric": {"name": "acc", "direction": "maximize", "source": "eval",
                   "results_file": "out.json"},
        "files": {"editable": ["train.py", "model.py"], "protected": ["eval.py"]},
        "budget": {"max_experiments": 40, "max_hours": 8, "usd": 12.5, "llm_usd": 2},
        "promotion": {"noise_runs": 5, "k_sigma": 2.5, "min_delta": 0.001, "confirm_runs": 1,
                      "max_cost_increase": 0.3, "min_sigma": 0.0005},
        "search": {"strategy": "llm", "queue_depth": 4, "seed": 7},
        "backend": {"name": "slurm", "slurm": {"partition": "gpu"}, "local": {"slots": 2}},
        "llm": {"name": "anthropic", "anthropic": {"model": "claude"}},
        "papers": {"sources": ["arxiv", "local"], "local": {"path": "notes"}},
        "metrics": {"store": "trackio", "trackio": {"project": "p"}},
        "reporter": {"interval": 30},
    }
    config = parse_config(raw, ROOT)
    assert config.name == "nanogpt" and config.lab == LabSection("nanogpt", "tiny shakespeare")
    assert config.run.time_limit == 900.0 and config.run.env == {"OMP_NUM_THREADS": "1"}
    assert config.run.argv() == ("python", "train.py", "--fast")
    assert config.run.eval_argv() == ("python", "ev.py", "a b")  # shlex, quotes respected
    assert config.metric.dir is Direction.MAXIMIZE and config.metric.results_file == "out.json"
    assert config.files == FilesSection(["train.py", "model.py"], ["eval.py"])
    assert config.budget.max_hours == 8 and config.budget.llm_usd == 2
    assert config.promotion.noise_runs == 5 and config.promotion.min_sigma == 0.0005
    assert config.search == SearchSection(strategy="llm", queue_depth=4, seed=7)
    assert config.backend == "slurm"
    assert config.backend_table() == {"partition": "gpu"}
    assert config.backend_table("local") == {"slots": 2}
    assert config.backend_table("hf-jobs") == {}
    assert (config.llm, config.llm_options) == ("anthropic", {"anthropic": {"model": "claude"}})
    assert config.paper_sources == ["arxiv", "local"]
    assert config.paper_options == {"local": {"path": "notes"}}
    assert (config.metric_store, config.metric_store_options) == (
        "trackio", {"trackio": {"project": "p"}})
    assert config.reporter == {"interval": 30} and config.raw == raw


@pytest.mark.parametrize(
    ("section", "valid_key"),
    [("lab", "description"), ("run", "eval_command"), ("metric", "results_file"),
     ("files", "protected"), ("budget", "max_hours"), ("promotion", "k_sigma"),
     ("search", "strategy")],
)
def test_unknown_key_names_it_and_lists_the_valid_ones(section: str, valid_key: str) -> None:
    raw: dict[str, Any] = {"run": dict(EVAL)}
    raw.setdefault(section, {})["colour"] = "blue"
    with pytest.raises(ConfigError) as info:
        parse_config(raw, ROOT)
    message = str(info.value)
    assert f"[{section}]" in message and "'colour'" in message
    assert "valid keys:" in message and valid_key in message


def test_unknown_table_lists_the_valid_tables() -> None:
    with pytest.raises(ConfigError, match=r"unknown table \[colour\].*valid: lab, run, metric"):
        parse_config({"colour": {}}, ROOT)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [("run", "command", 5, "expected str | list[str]"),
     ("files", "editable", "train.py", "expected list"),
     ("promotion", "noise_runs", True, "expected int"),  # a bool is not a count
     ("budget", "max_hours", "lots", "expected float | None"),
     ("lab", "name", 3, "expected str"),
     ("run", "env", ["A=1"], "expected dict")],
)
def test_wrong_type_names_key_and_expected_type(
    section: str, key: str, value: Any, expected: str
) -> None:
    raw: dict[str, Any] = {"run": dict(EVAL)}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(raw, ROOT)
    message = str(info.value)
    assert f"[{section}] {key} = {value!r} has the wrong type" in message
    assert expected in message


@pytest.mark.parametrize(
    ("section", "key", "value", "choices"),
    [("metric", "direction", "down", "'minimize', 'maximize'"),
     ("metric", "source", "stdout", "'eval', 'pattern'"),
     ("search", "strategy", "genetic", "'auto', 'knob', 'llm', 'random'")],
)
def test_bad_choice_lists_the_choices(section: str, key: str, value: str, choices: str) -> None:
    raw: dict[str, Any] = {"run": dict(EVAL), section: {key: value}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, ROOT)
    assert str(info.value) == (
        f"[{section}] {key} = {value!r} is not valid; choose one of: {choices}"
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [("budget", "max_experiments"), ("budget", "max_hours"), ("promotion", "noise_runs"),
     ("promotion", "confirm_runs")],
)
def test_counts_and_limits_must_be_positive(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key} must be positive, got 0"):
        parse_config({"run": dict(EVAL), section: {key: 0}}, ROOT)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(600, 600.0), (1.5, 1.5), ("90s", 90.0), ("45sec", 45.0), ("10m", 600.0),
     (" 10 min ", 600.0), ("2h", 7200.0), ("1.5h", 5400.0), ("3hr", 10800.0),
     ("1d", 86400.0), ("7", 7.0)],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value, "[run] time_limit") == seconds


@pytest.mark.parametrize("value", ["10 minutes", "abc", "", "1h30m", "10M", True, None, [10]])
def test_bad_durations_name_the_key_and_show_examples(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "[run] time_limit")
    assert str(info.value) == (
        f"[run] time_limit: expected a duration such as 600, '10m' or '2h', got {value!r}"
    )


def test_duration_in_config_and_dashed_keys() -> None:
    assert cfg(run={"time-limit": "2h"}).run.time_limit == 7200.0
    with pytest.raises(ConfigError, match=r"\[run\] time_limit: expected a duration"):
        cfg(run={"time_limit": "soon"})
    with pytest.raises(ConfigError, match=r"unknown key 'time-limt'"):  # the user's spelling
        cfg(run={"time-limt": "2h"})


def test_run_requirements_and_checkout_retention() -> None:
    run = cfg(run={"requirements": ["datasets>=2.19"], "keep_checkouts": "3d"}).run
    assert run.requirements == ["datasets>=2.19"] and run.keep_checkouts == 3 * 86400.0
    assert cfg().run.requirements == [] and cfg().run.keep_checkouts == 7 * 86400.0
    with pytest.raises(ConfigError, match=r"\[run\] requirements"):
        cfg(run={"requirements": "datasets"})
    with pytest.raises(ConfigError, match=r"\[run\] keep_checkouts: expected a duration"):
        cfg(run={"keep_checkouts": "a week"})


def test_bug_list_type_error_names_the_element_type() -> None:
    """BUG (autolab_core/config.py _describe): ``list[str].__name__`` is ``"list"``, so a list
    with a wrong element says "['a.py', 1] has the wrong type; expected list"."""
    with pytest.raises(ConfigError, match=r"expected list\[str\]"):
        cfg(files={"editable": ["a.py", 1]})


def test_bug_negative_time_limit_is_rejected() -> None:
    """BUG (autolab_core/config.py parse_duration): a negative number is accepted as a
    duration, so ``time_limit = -5`` gives every job a limit already past."""
    with pytest.raises(ConfigError, match=r"\[run\] time_limit"):
        cfg(run={"time_limit": -5})


def test_pattern_source_needs_a_pattern_with_a_group() -> None:
    with pytest.raises(ConfigError, match=r"source = 'pattern' needs pattern = "):
        parse_config({"metric": {"source": "pattern"}}, ROOT)
    with pytest.raises(ConfigError, match=r"pattern 'val_bpb: \[0-9.\]\+' needs one \(group\)"):
        parse_config({"metric": {"source": "pattern", "pattern": "val_bpb: [0-9.]+"}}, ROOT)
    with pytest.raises(ConfigError, match=r"pattern 'val_bpb: \(' is not a regex"):
        parse_config({"metric": {"source": "pattern", "pattern": "val_bpb: ("}}, ROOT)
    config = parse_config(
        {"metric": {"source": "pattern", "pattern": r"^val_bpb:\s*([0-9.]+)"}}, ROOT
    )  # no eval_command needed for an (untrusted) pattern metric
    assert config.run.eval_command is None and config.metric.source == "pattern"


def test_eval_source_needs_an_eval_command_and_says_both_fixes() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, ROOT)
    message = str(info.value)
    assert "eval_command" in message and "source = 'pattern'" in message
    # A pattern alongside the eval source is still checked.
    with pytest.raises(ConfigError, match="needs one"):
        cfg(metric={"pattern": "x"})


def test_files_rules() -> None:
    with pytest.raises(ConfigError, match=r"\[files\] editable must name at least one file"):
        cfg(files={"editable": []})
    with pytest.raises(ConfigError, match=r"\['eval.py'\] cannot be both editable and protected"):
        cfg(files={"editable": ["train.py", "eval.py"], "protected": ["eval.py"]})


@pytest.mark.parametrize("section", ["backend", "llm", "metrics"])
def test_plugin_section_scalar_key_points_at_subtables(section: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(**{section: {"partition": "gpu"}})
    message = str(info.value)
    assert f"[{section}] unknown key 'partition'" in message
    assert f"[{section}.<plugin-name>]" in message


@pytest.mark.parametrize(("section", "key"), [("backend", "name"), ("llm", "name"),
                                              ("metrics", "store")])
def test_plugin_name_must_be_a_string(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key} must be a string, got 3"):
        cfg(**{section: {key: 3}})


def test_papers_section_rules() -> None:
    with pytest.raises(ConfigError, match=r"\[papers\] sources must be a list of names"):
        cfg(papers={"sources": "arxiv"})
    with pytest.raises(ConfigError, match=r"\[papers\] unknown key 'limit'; valid keys: sources"):
        cfg(papers={"sources": [], "limit": 3})


@pytest.mark.parametrize("section", ["lab", "run", "metric", "files", "budget", "promotion",
                                     "search", "backend", "llm", "papers", "metrics", "reporter"])
def test_bug_a_section_given_as_a_string_is_a_config_error(section: str) -> None:
    """BUG (autolab_core/config.py parse_config, _plugin_section, parse_options): a top-level
    ``backend = "slurm"``, an easy mistake for ``[backend] name = "slurm"``, crashes with a
    bare ValueError from ``dict("slurm")`` instead of a ConfigError naming the table."""
    with pytest.raises(ConfigError, match=rf"\[{section}\] must be a table"):
        parse_config({"run": dict(EVAL), section: "slurm"}, ROOT)


def test_load_config_from_disk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no autolab.toml in .*; run `autolab init"):
        load_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[run\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(
        '[run]\neval_command = "python eval.py"\ntime_limit = "20m"\n'
        '[backend]\nname = "hf-jobs"\n[backend.hf-jobs]\nflavor = "cpu-basic"\n'
    )
    config = load_config(str(tmp_path))
    assert config.root == tmp_path.resolve() and config.run.time_limit == 1200.0
    assert config.backend_table() == {"flavor": "cpu-basic"}


# -- parse_options, as plugins use it ------------------------------------------------------------
@attrs.frozen
class _ClusterOptions:
    partition: str = "debug"
    qos: str = attrs.field(default="normal", metadata={"choices": ["normal", "high"]})
    max_wait: float | None = attrs.field(default=None, metadata={"duration": True})
    gpus: int = 0
    modules: tuple[str, ...] = ()


def test_parse_options_for_a_plugin_table() -> None:
    opts = parse_options(
        _ClusterOptions,
        {"partition": "gpu", "qos": "high", "max-wait": "1h", "gpus": 2, "modules": ["cuda"]},
        "backend.mycluster",
    )
    assert opts == _ClusterOptions("gpu", "high", 3600.0, 2, ("cuda",))
    assert parse_options(_ClusterOptions, None, "backend.mycluster") == _ClusterOptions()
    with pytest.raises(ConfigError, match=r"^\[backend.mycluster\] unknown key 'queue'; "
                                          r"valid keys: gpus, max_wait, modules, partition, qos$"):
        parse_options(_ClusterOptions, {"queue": "x"}, "backend.mycluster")
    with pytest.raises(ConfigError, match=r"qos = 'low' is not valid; choose one of: 'normal'"):
        parse_options(_ClusterOptions, {"qos": "low"}, "backend.mycluster")
    with pytest.raises(ConfigError, match=r"gpus = 1.5 has the wrong type; expected int"):
        parse_options(_ClusterOptions, {"gpus": 1.5}, "backend.mycluster")


def test_run_and_metric_helpers() -> None:
    assert RunSection(command="python  train.py --x 'a b'").argv() == (
        "python", "train.py", "--x", "a b")
    assert RunSection(command=["python", "a b.py"]).argv() == ("python", "a b.py")
    assert RunSection().eval_argv() is None
    assert MetricSection(direction="maximize").dir is Direction.MAXIMIZE

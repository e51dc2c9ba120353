"""Identical baselines are detected and explained; the seed reaches jobs by env and argv."""

from __future__ import annotations

from autolab.seed_check import (
    identical_baselines,
    seed_env,
    seed_status,
    seed_warning,
    seeded_argv,
)
from autolab_core.secrets import job_env


def test_identical_values_are_detected_and_different_ones_are_not() -> None:
    assert identical_baselines([1.2345, 1.2345, 1.2345])
    assert not identical_baselines([1.2345, 1.2345, 1.23450001])
    assert not identical_baselines([1.0])  # one run measures nothing yet
    assert not identical_baselines([])
    assert not identical_baselines([float("nan"), float("nan")])


def test_the_warning_names_the_variable_and_one_line_per_framework() -> None:
    text = seed_warning([2.5, 2.5, 2.5], metric="val_loss", seed_env="MY_SEED", min_sigma=0.01)
    assert text is not None
    assert "3 baseline runs of unchanged main gave the same val_loss (2.5)" in text
    assert "min_sigma = 0.01 is used instead" in text
    for needle in ('os.environ.get("MY_SEED", "0")', "random.seed(seed)", "np.random.seed(seed)",
                   "torch.manual_seed(seed)", "jax.random.PRNGKey(seed)",
                   "transformers.set_seed(seed)", "seed_everything(seed)",
                   "$AUTOLAB_SEED_DATA", "$AUTOLAB_SEED_INIT", "--seed {seed}"):
        assert needle in text
    assert seed_warning([2.5, 2.6, 2.5]) is None
    assert "min_sigma is 0" in (seed_warning([1.0, 1.0]) or "")


def test_status_line_is_one_line() -> None:
    line = seed_status([3.0, 3.0, 3.0], "val_bpb")
    assert line is not None and "\n" not in line and "ignores AUTOLAB_SEED" in line
    assert seed_status([3.0, 3.1]) is None


def test_the_seed_variables_survive_the_allow_listed_job_environment() -> None:
    env = job_env(base={"PATH": "/bin", "HF_TOKEN": "hf_secretsecret"}, extra=None)
    env.update(seed_env(4))
    passed = job_env(base=env)  # what a remote runner that re-filters its environment keeps
    assert passed["AUTOLAB_SEED"] == passed["AUTOLAB_SEED_DATA"] == passed["AUTOLAB_SEED_INIT"] == "4"
    assert "HF_TOKEN" not in passed


def test_the_seed_placeholder_is_replaced_in_the_command() -> None:
    assert seeded_argv(["python", "train.py", "--seed", "{seed}", "seed={seed}"], 7) == (
        "python", "train.py", "--seed", "7", "seed=7")

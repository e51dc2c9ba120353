"""autolab_core.secrets: what lab code may see and what is scrubbed before anything is written."""

from autolab_core.secrets import job_env, looks_secret, scrub, secret_values


def test_tokens_never_reach_lab_code_even_when_allowed_by_prefix() -> None:
    base = {"PATH": "/bin", "HF_TOKEN": "hf_abcdefgh", "OPENAI_API_KEY": "sk-123456",
            "SLURM_JOB_ID": "7", "SLURM_AUTH_TOKEN": "xyzxyzxyz", "MY_VAR": "1", "LC_ALL": "C"}
    env = job_env(base, extra={"AUTOLAB_SEED": "3", "WANDB_API_KEY": "k" * 10},
                  passthrough=["MY_VAR", "HF_TOKEN"])
    assert env == {"PATH": "/bin", "SLURM_JOB_ID": "7", "MY_VAR": "1", "LC_ALL": "C",
                   "AUTOLAB_SEED": "3"}


def test_names_that_look_secret() -> None:
    for name in ("HF_TOKEN", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                 "GITHUB_PAT_TOKEN", "SSH_PRIVATE_KEY", "KEY"):
        assert looks_secret(name), name
    for name in ("PATH", "HOME", "KEYBOARD_LAYOUT", "MONKEY", "SLURM_JOB_ID"):
        assert not looks_secret(name), name


def test_scrub_replaces_every_secret_value_longest_first() -> None:
    env = {"HF_TOKEN": "hf_secret_value", "SHORT_TOKEN": "abc", "PATH": "/usr/bin"}
    values = secret_values(env, also=["hf_secret_value_extended"])
    assert values == ["hf_secret_value_extended", "hf_secret_value"]
    text = "token hf_secret_value_extended and hf_secret_value, abc and /usr/bin stay"
    assert scrub(text, values) == "token *** and ***, abc and /usr/bin stay"

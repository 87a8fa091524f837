"""Parameter files are validated before any work starts: one clear message listing every problem."""

import pytest
import yaml

from diffusion_lib.core.config import from_dict
from diffusion_lib.training.config import TrainConfig, load_train_config
from diffusion_lib.core.errors import ConfigError


def check(data):
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, data)
    return str(err.value)


def test_defaults_are_valid():
    cfg = from_dict(TrainConfig, {})
    assert cfg.schedule == "linear" and cfg.model.channel_mults == (1, 2, 2)


def test_unknown_key_suggests_the_close_one():
    msg = check({"learning_rate": 1e-3, "batchsize": 4})
    assert "unknown key 'batchsize'" in msg and "did you mean 'batch_size'" in msg
    assert "unknown key 'learning_rate'" in msg


def test_unknown_nested_key():
    msg = check({"model": {"base_channel": 16}})
    assert "model.base_channel" in msg and "base_channels" in msg


@pytest.mark.parametrize("data,needle", [
    ({"steps": 0}, "steps: must be > 0"),
    ({"steps": -5}, "steps: must be > 0"),
    ({"lr": 0}, "lr: must be in (0, 1)"),
    ({"lr": -1e-3}, "lr"),
    ({"batch_size": 0}, "batch_size: must be > 0"),
    ({"schedule": "sigmoid"}, "schedule: must be one of ['cosine', 'linear', 'quadratic']"),
    ({"dataset": "imagenet"}, "dataset: must be one of"),
    ({"steps": "many"}, "steps: expected an integer"),
    ({"steps": True}, "steps: expected an integer"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"model": {"channel_mults": "1,2"}}, "model.channel_mults: expected a list"),
    ({"model": {"dropout": 1.5}}, "model.dropout: must be in [0, 1)"),
    ({"ema_decay": 1.0}, "ema_decay: must be in [0, 1)"),
    ({"image_size": 30}, "cannot be halved"),
    ({"device": "gpu0"}, "device: must be auto, cpu, cuda"),
    ({"noise_steps": 1}, "noise_steps: must be >= 2"),
    ({"train_subset": 8, "batch_size": 16}, "train_subset (8) is smaller than batch_size"),
    ({"model": 5}, "model: expected a mapping"),
])
def test_bad_values(data, needle):
    assert needle in check(data)


def test_all_problems_in_one_message():
    msg = check({"steps": 0, "lr": 5, "schedul": "linear"})
    assert msg.count("\n  - ") == 3


def test_yaml_1e_notation_is_a_number(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 1e-4\n")
    assert load_train_config(p).lr == pytest.approx(1e-4)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_train_config(lst)


def test_every_committed_profile_is_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted(root.glob("params/*/03_train.yaml"))
    assert {f.parent.name for f in files} >= {"quick", "cpu", "gpu"}
    for f in files:
        cfg = load_train_config(f)
        assert cfg.out_dir.startswith(f"results/{f.parent.name}/"), f  # a quick run never writes cpu/gpu results
        assert yaml.safe_load(f.read_text())["train"]

"""The configuration: course flags and defaults, precedence, YAML, and one-line errors."""

from __future__ import annotations

import pytest

from cvae_dist import config as cfg
from cvae_dist.errors import UserError

COURSE_DEFAULTS = {
    "batch_size": 2, "lr": 0.001, "optim": "Adam", "num_epoch": 70, "per_save": 3, "partial": 1.0,
    "train_vi_len": 16, "val_vi_len": 630, "frame_H": 32, "frame_W": 64, "F_dim": 128, "L_dim": 32,
    "N_dim": 12, "D_out_dim": 192, "tfr": 1.0, "tfr_sde": 10, "tfr_d_step": 0.1, "kl_anneal_type": "Cyclical",
    "kl_anneal_cycle": 10, "kl_anneal_ratio": 1.0, "ckpt_path": None, "fast_train": False, "fast_partial": 0.4,
    "fast_train_epoch": 5, "num_workers": 4, "DR": None,
}


def test_every_course_flag_has_the_course_default():
    flat = cfg.parse_args(["--save_root", "x"]).flat()
    assert {k: flat[k] for k in COURSE_DEFAULTS} == COURSE_DEFAULTS
    assert flat["save_root"] == "x"


def test_every_flag_has_a_docstring_and_appears_in_help(capsys):
    with pytest.raises(SystemExit):
        cfg.build_parser().parse_args(["--help"])
    help_text = capsys.readouterr().out
    for name, option in cfg.options().items():
        assert option.help, f"{name} has no docstring"
        assert f"--{name}" in help_text


def test_precedence_defaults_preset_yaml_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: tiny\nF_dim: 64\nlr: 0.01\nkl_anneal_type: Monotonic\n")
    config = cfg.parse_args(["--config", str(path), "--lr", "0.5"])
    assert config.model.F_dim == 64  # YAML beats the preset
    assert config.model.L_dim == cfg.PRESETS["tiny"]["L_dim"]  # the preset beats the default
    assert config.train.lr == 0.5  # a flag beats YAML
    assert config.method.kl_anneal_type == "Monotonic"


def test_no_arguments_use_the_default_config(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("preset: tiny\nsave_root: runs/demo\n")
    assert cfg.parse_args([], default_config=path).train.save_root == "runs/demo"
    assert cfg.parse_args(["--num_epoch", "3"], default_config=path).train.save_root == "runs/default"


def test_flag_types_booleans_and_lists():
    config = cfg.parse_args(["--fast_train", "--no-shuffle", "--lr_milestones", "3", "7", "--ckpt_path", "None"])
    assert config.data.fast_train is True and config.data.shuffle is False
    assert config.train.lr_milestones == [3, 7]
    assert config.train.ckpt_path is None
    assert cfg.parse_args(["--lr_milestones"]).train.lr_milestones == []


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"kl_anneal_type": "Linear"}, "invalid 'kl_anneal_type' 'Linear'; choose from Cyclical, Monotonic, Without"),
        ({"batch_size": "two"}, "'batch_size' must be int"),
        ({"batch_size": 2.5}, "'batch_size' must be int"),
        ({"lr": True}, "'lr' must be float"),
        ({"learning_rate": 0.1}, "unknown setting 'learning_rate'"),
        ({"batch_sise": 4}, "did you mean 'batch_size'"),
        ({"batch_size": 0}, "--batch_size must be >= 1"),
        ({"tfr": 1.5}, "--tfr must be in [0, 1]"),
        ({"F_dim": 100}, "--F_dim must be a positive multiple of 8"),
    ],
)
def test_bad_settings_name_the_key_and_the_problem(settings, message):
    with pytest.raises(UserError) as err:
        cfg.resolve({k: (v, "run.yaml") for k, v in settings.items()})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        cfg.parse_args(["--config", str(path)])


def test_config_file_round_trip_and_digest(tmp_path):
    config = cfg.parse_args(["--preset", "tiny", "--lr", "0.002", "--lr_milestones", "4"])
    cfg.save_config_file(config, tmp_path / "config.yaml")
    again = cfg.load_config_file(tmp_path / "config.yaml")
    assert again == config
    assert again.digest() == config.digest()
    assert cfg.parse_args(["--preset", "tiny"]).digest() != config.digest()

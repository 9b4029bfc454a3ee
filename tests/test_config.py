"""The configuration: course flags and defaults, precedence, YAML, validation and one-line errors."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

import pytest

from cvae_dist import config as cfg
from cvae_dist.errors import UserError
from cvae_dist.metrics import SSIM_WINDOW

COURSE_DEFAULTS = {
    "batch_size": 2,
    "lr": 0.001,
    "optim": "Adam",
    "num_epoch": 70,
    "per_save": 3,
    "partial": 1.0,
    "train_vi_len": 16,
    "val_vi_len": 630,
    "frame_H": 32,
    "frame_W": 64,
    "F_dim": 128,
    "L_dim": 32,
    "N_dim": 12,
    "D_out_dim": 192,
    "tfr": 1.0,
    "tfr_sde": 10,
    "tfr_d_step": 0.1,
    "kl_anneal_type": "Cyclical",
    "kl_anneal_cycle": 10,
    "kl_anneal_ratio": 1.0,
    "ckpt_path": None,
    "fast_train": False,
    "fast_partial": 0.4,
    "fast_train_epoch": 5,
    "num_workers": 4,
    "DR": None,
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
        ({"kl_anneal_type": "Linear"}, "run.yaml: kl_anneal_type must be one of Cyclical, Monotonic, Without, got 'Linear'"),
        ({"batch_size": "two"}, "run.yaml: batch_size must be int, got 'two'"),
        ({"batch_size": 2.5}, "run.yaml: batch_size must be int, got 2.5"),
        ({"lr": True}, "run.yaml: lr must be float, got True"),
        ({"learning_rate": 0.1}, "run.yaml: unknown setting 'learning_rate'"),
        ({"batch_sise": 4}, "run.yaml: unknown setting 'batch_sise' (did you mean 'batch_size'?)"),
        ({1: 4}, "run.yaml: unknown setting '1'"),
        ({"batch_size": 0}, "run.yaml: batch_size must be >= 1, got 0"),
        ({"tfr": 1.5}, "run.yaml: tfr must be in [0, 1], got 1.5"),
        ({"F_dim": 100}, "run.yaml: F_dim must be a multiple of 8 >= 8, got 100"),
        ({"lr": math.nan}, "run.yaml: lr must be a finite number > 0, got nan"),
        ({"lr": "inf"}, "run.yaml: lr must be a finite number > 0, got inf"),
        ({"max_grad_norm": -1}, "run.yaml: max_grad_norm must be >= 0, got -1.0"),
        ({"partial": 0}, "run.yaml: partial must be in (0, 1], got 0.0"),
        ({"lr_gamma": 0}, "run.yaml: lr_gamma must be in (0, 1], got 0.0"),
        ({"lr_milestones": [5, 2]}, "run.yaml: lr_milestones must be increasing, each >= 1, got [5, 2]"),
        ({"lr_milestones": [0, 3]}, "run.yaml: lr_milestones must be increasing, each >= 1, got [0, 3]"),
        ({"frame_H": 8}, "run.yaml: frame_H must be >= 11, got 8"),
        ({"seed": 2**24}, "run.yaml: seed must be in [0, 16777215], got 16777216"),
        ({"logvar_max": 1e3}, "run.yaml: logvar_max must be <= 88, got 1000.0"),
        ({"save_root": ""}, "run.yaml: save_root must be a non-empty text without NUL characters, got ''"),
        ({"DR": "data\0"}, "run.yaml: DR must be a non-empty text without NUL characters, got 'data\\x00'"),
        ({"L_dim": 6}, "run.yaml: --F_dim + --L_dim + --N_dim must be a multiple of 4 (the decoder fusion quarters it), got 146"),
        ({"logvar_min": 20}, "run.yaml: --logvar_min (20.0) must be below --logvar_max (20.0)"),
        (
            {"compile_mode": "reduce-overhead", "compile_backend": "aot_eager"},
            "run.yaml: --compile_mode reduce-overhead is inductor's: it needs --compile_backend inductor, got aot_eager",
        ),
        (
            {"overwrite": True, "resume_from_checkpoint": "latest"},
            "run.yaml: --overwrite and --resume_from_checkpoint contradict each other: choose one",
        ),
    ],
)
def test_bad_settings_name_the_key_and_the_problem(settings, message):
    with pytest.raises(UserError) as err:
        cfg.resolve({k: (v, "run.yaml") for k, v in settings.items()})
    assert str(err.value) == message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--lr", "fast"], "--lr must be float, got 'fast'"),
        (["--num_epoch", "0"], "--num_epoch must be >= 1, got 0"),
        (["--logvar_max", "-40"], "--logvar_min (-30.0) must be below --logvar_max (-40.0)"),
        (["--lr"], "argument --lr: expected one argument"),
        (["--learning_rate", "0.1"], "unrecognized arguments: --learning_rate 0.1"),
    ],
)
def test_bad_flags_are_named_as_flags(argv, message):
    with pytest.raises(UserError) as err:
        cfg.parse_args(argv)
    assert str(err.value) == message


def _types_in(kind) -> set:
    """An annotation and every type inside it: list[int] | None -> {list[int] | None, list[int], int, NoneType}."""
    return {kind}.union(*map(_types_in, typing.get_args(kind)))


def test_every_numeric_setting_states_its_range_next_to_it_and_no_other_does():
    numeric, ranged = set(), set()
    for section in cfg.SECTIONS.values():
        hints = typing.get_type_hints(section)
        numeric.update(f.name for f in dataclasses.fields(section) if {int, float} & _types_in(hints[f.name]))
        ranged.update(f.name for f in dataclasses.fields(section) if isinstance(f.metadata.get("allowed"), cfg.Range))
    assert {"lr_milestones", "gpu", "lr"} <= numeric  # a list of numbers and an optional number count
    assert numeric == ranged
    assert cfg.options()["num_workers"].allowed == cfg.AT_LEAST_0


@dataclass
class Forgotten:
    width: int = 3
    """A number with no range."""


@dataclass
class ForgottenInAList:
    steps: list[float] | None = cfg.setting(None)
    """Numbers with no range."""


@dataclass
class RangeOnText:
    name: str = cfg.setting("x", allowed=cfg.AT_LEAST_0)
    """Text cannot have a range."""


@dataclass
class Declared:
    width: int | None = cfg.setting(3, allowed=cfg.AT_LEAST_1)
    """A number with its range."""


@pytest.mark.parametrize(
    "section, message",
    [
        (Forgotten, "setting 'width' is a number: state the values it may take, as setting(..., allowed=Range(...))"),
        (ForgottenInAList, "setting 'steps' is a number: state the values it may take, as setting(..., allowed=Range(...))"),
        (RangeOnText, "setting 'name' is not a number, so it takes no range (allowed=)"),
    ],
)
def test_a_section_whose_numeric_setting_has_no_range_is_refused(section, message):
    with pytest.raises(TypeError) as err:
        cfg.describe({"new": section})
    assert str(err.value) == message


def test_a_declared_range_is_what_validation_holds_the_setting_to():
    (option,) = cfg.describe({"new": Declared}).values()
    assert (option.allowed, option.help, option.default) == (cfg.AT_LEAST_1, "A number with its range.", 3)
    assert option.problem(0) == "must be >= 1" and option.problem(1) is None and option.problem(None) is None


def test_defaults_and_presets_are_valid():
    for preset in cfg.PRESETS:
        cfg.resolve({"preset": (preset, "test")})  # resolve validates what it builds
    assert cfg.MIN_FRAME_SIDE == SSIM_WINDOW  # config keeps its own copy to stay free of torch


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


def test_the_course_flags_that_choose_devices_and_modes_are_accepted(capsys, monkeypatch):
    config = cfg.parse_args(["--device", "cpu", "--gpu", "1", "--test", "--store_visualization"])
    assert (config.train.device, config.train.gpu, config.train.test, config.train.store_visualization) == ("cpu", 1, True, True)
    unset = cfg.parse_args([]).train
    assert (unset.device, unset.gpu, unset.test, unset.store_visualization) == (None, None, False, False)
    assert cfg.parse_args(["--device", "cuda"]).train.device == "cuda"
    with pytest.raises(UserError) as err:
        cfg.parse_args(["--device", "cuda:1"])
    assert str(err.value) == "--device must be one of cuda, cpu, got 'cuda:1'"
    # Where a run computes and what it writes besides its result: a resumed run may change them.
    assert all(cfg.is_bookkeeping(name) for name in ("device", "gpu", "test", "store_visualization"))
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: argparse would break a path at its hyphens
    with pytest.raises(SystemExit):
        cfg.build_parser().parse_args(["--help"])
    help_text = capsys.readouterr().out
    for promise in ("Accelerate's cpu=True", "accelerate launch --num_processes N", "as the course's --test does", "eval/rollout-epoch-<E>.gif"):
        assert promise in help_text

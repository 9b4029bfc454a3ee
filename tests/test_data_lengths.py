"""The lengths the dataset must have: errors that name the setting and the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvae_dist.config import parse_args
from cvae_dist.data import check_train_length, val_length
from cvae_dist.errors import UserError


def test_a_training_video_too_short_for_one_window_names_the_setting_and_the_folder():
    data = parse_args(["--train_vi_len", "16", "--partial", "0.5"]).data
    check_train_length(data, Path("d/train/train_img"), 32)
    with pytest.raises(UserError) as err:
        check_train_length(data, Path("d/train/train_img"), 31)
    assert (
        str(err.value)
        == "--train_vi_len 16: the training video d/train/train_img has 31 frames, 15 of them with --partial 0.5, too few for one window"
    )


def test_a_validation_video_too_short_is_an_error_or_a_warning(capsys):
    assert val_length(630, Path("d/val/val_img"), 630, shorter_ok=False) == 630
    assert val_length(None, Path("d/val/val_img"), 64, shorter_ok=False) == 64
    with pytest.raises(UserError) as err:
        val_length(630, Path("d/val/val_img"), 64, shorter_ok=False)
    assert str(err.value) == "--val_vi_len 630: the validation video d/val/val_img has 64 frames; use --val_vi_len 64 or fewer"
    assert capsys.readouterr().err == ""
    assert val_length(630, Path("d/val/val_img"), 64, shorter_ok=True) == 64
    assert capsys.readouterr().err == "warning: --val_vi_len 630: the validation video d/val/val_img has 64 frames; rolling out all 64\n"

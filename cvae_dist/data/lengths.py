"""Lengths the dataset must have: whether its videos are long enough for the windows and rollout asked for."""

from __future__ import annotations

import sys
from pathlib import Path

from cvae_dist.config import DataConfig
from cvae_dist.errors import UserError


def check_train_length(data: DataConfig, folder: Path, frames: int) -> None:
    """--train_vi_len against the `frames` of the training video in `folder` (and --partial of them)."""
    usable = int(frames * data.partial)
    if data.train_vi_len > usable:
        partial = f", {usable} of them with --partial {data.partial}" if usable < frames else ""
        raise UserError(f"--train_vi_len {data.train_vi_len}: the training video {folder} has {frames} frames{partial}, too few for one window")


def val_length(val_vi_len: int | None, folder: Path, frames: int, *, shorter_ok: bool) -> int:
    """The frames of the validation video (in `folder`, `frames` long) to roll out for --val_vi_len
    (None: all). Asking for more is an error, or with `shorter_ok` a warning that all are used."""
    if val_vi_len is None or val_vi_len <= frames:
        return val_vi_len or frames
    problem = f"--val_vi_len {val_vi_len}: the validation video {folder} has {frames} frames"
    if not shorter_ok:
        raise UserError(f"{problem}; use --val_vi_len {frames} or fewer")
    print(f"warning: {problem}; rolling out all {frames}", file=sys.stderr, flush=True)
    return frames

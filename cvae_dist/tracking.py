"""What goes into TensorBoard beyond plain scalars: the HParams record and image strips.

Accelerate's own `init_trackers(config=...)` writes hparams into a separate event folder with
no metrics, which leaves TensorBoard's HParams dashboard empty. Writing the hparams summary
into the run's own event file, with the metric tags declared, makes each run show there with
its metrics (as PyTorch Lightning does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard.summary import hparams

# Accelerate's tracker writes a run's events under <logging_dir>/<project name>.
TB_PROJECT = "tb"

# The scalars the HParams dashboard shows next to each run's settings.
HPARAM_METRICS = ("val/psnr", "val/best_psnr", "final/psnr", "epoch/loss")


def hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard's HParams accept numbers, strings and booleans only."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)


def write_hparams(writer, settings: dict[str, Any]) -> None:
    """Record a run's settings in its own event file, declaring HPARAM_METRICS as its metrics."""
    values = {k: hparam_value(v) for k, v in settings.items()}
    for summary in hparams(values, {tag: 0.0 for tag in HPARAM_METRICS}):
        writer.file_writer.add_summary(summary)
    writer.flush()


def frame_strip(rows: list[torch.Tensor], columns: int = 8, scale: int = 2) -> np.ndarray:
    """Rows of videos (each (T, 3, H, W) in [0,1]) -> one HWC uint8 image of `columns` frames each.

    The frames shown are spread evenly over the video, so a strip shows how a rollout drifts.
    """
    steps = rows[0].shape[0]
    picks = torch.linspace(0, steps - 1, min(columns, steps)).round().long()
    grid = torch.stack([row[picks].float().clamp(0, 1).cpu() for row in rows])  # (R, C, 3, H, W)
    grid = torch.nn.functional.pad(grid, (1, 1, 1, 1), value=1.0)
    image = grid.permute(0, 3, 1, 4, 2).flatten(2, 3).flatten(0, 1)  # (R*H, C*W, 3)
    image = image.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return (image.numpy() * 255).round().astype(np.uint8)

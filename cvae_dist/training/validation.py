"""Validation: BatchNorm recalibrated, the validation video rolled out from its first frame, its scores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from cvae_dist.data.course import to_unit_float
from cvae_dist.evaluate import Evaluation, evaluate_video
from cvae_dist.rollout import recalibrate_batchnorm
from cvae_dist.training.build import Parts


@dataclass(frozen=True)
class Validation:
    """One validation: scores averaged over frames 1..T-1 (tracking.ValTags logs them under the same names), and the rollout."""

    psnr: float
    """Average PSNR of the rollout from the first frame."""
    baseline_psnr: float
    """Average PSNR of copying the first frame."""
    one_step_psnr: float
    """Average PSNR of each frame predicted from the true previous frame."""
    copy_previous_psnr: float
    """Average PSNR of copying the true previous frame."""
    rollout: torch.Tensor
    """The predicted frames (T, 3, H, W) as the network output them, on the CPU; frame 0 is the given one."""


def validate(parts: Parts, on_frame: Callable[[], None] | None = None, model: torch.nn.Module | None = None) -> Validation:
    """Recalibrate BatchNorm and roll out the validation video with `model` (unset: the model trained);
    every process runs it so sharded models can gather weights.

    `on_frame` is called after every predicted frame: a lab-sized rollout on a CPU outlasts Slurm's
    wait between SIGTERM and SIGKILL, so the loop checks there for a stop."""
    model = model if model is not None else parts.network
    with parts.precision.autocast():
        recalibrate_batchnorm(model, recalibration_labels(parts))
    evaluation = evaluate(parts, model, on_frame)
    return Validation(
        psnr=evaluation.average,
        baseline_psnr=evaluation.baseline_average,
        one_step_psnr=evaluation.one_step_average,
        copy_previous_psnr=evaluation.copy_previous_average,
        rollout=evaluation.pred,
    )


def evaluate(parts: Parts, model: torch.nn.Module, on_frame: Callable[[], None] | None = None) -> Evaluation:
    """`model`'s rollout of the first --val_vi_len frames of the validation video, scored frame by frame."""
    config = parts.config
    return evaluate_video(
        model,
        parts.val_video,
        parts.accelerator.device,
        config.data.val_vi_len,
        seed=config.train.seed,
        autocast=parts.precision.autocast,
        on_frame=on_frame,
    )


def recalibration_labels(parts: Parts) -> Iterator[torch.Tensor]:
    """Pose labels of training windows evenly spaced over the video, in training-size batches, the same on every process."""
    windows, batch = parts.windows, parts.config.train.batch_size
    count = min(parts.config.method.bn_recalibration_windows, len(windows))
    indices = torch.linspace(0, len(windows) - 1, count).round().long().tolist() if count else []
    for start in range(0, count, batch):
        labels = torch.stack([windows[i][1] for i in indices[start : start + batch]])
        yield to_unit_float(labels.to(parts.accelerator.device))

"""What a run logs to TensorBoard: the tags of its scalars, the HParams record and image strips.

The trainer logs under the tags below, and the report and the sweep summary read them back, so
the names live here only.

Accelerate's own `init_trackers(config=...)` writes hparams into a separate event folder with
no metrics, which leaves TensorBoard's HParams dashboard empty. Writing the hparams summary
into the run's own event file, with the metric tags declared, makes each run show there with
its metrics (as PyTorch Lightning does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG
from torch.utils.tensorboard.summary import hparams

# Accelerate's tracker writes a run's events under <logging_dir>/<project name>.
TB_PROJECT = "tb"


T = TypeVar("T")


@dataclass(frozen=True)
class BatchScalars(Generic[T]):
    """What each training batch reports: tensors on the device per batch, floats once averaged over
    optimizer steps (over batches and processes)."""

    loss: T
    """The training loss: MSE + beta * KL."""
    mse: T
    """The reconstruction MSE, summed over frames."""
    kl: T
    """The KL term before beta, summed over frames."""
    teacher_forcing: T
    """The share of frames predicted from true previous frames."""
    grad_norm: T
    """The gradient norm before clipping."""

    def values(self) -> tuple[T, ...]:
        """The fields' values in their order (dataclasses.astuple would deep-copy tensors)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class StepScalars(BatchScalars[T]):
    """What the log shows of training steps: the batches' averages and the schedules' values, every
    --log_every steps at the step under `train/`, and every epoch at the epoch count under `epoch/`.
    Its fields are the one list of these names: TRAIN and EPOCH are StepScalars of tags."""

    beta: T
    """The KL weight of the latest step."""
    tfr: T
    """The teacher-forcing ratio."""
    lr: T
    """The learning rate."""

    def of(self: StepScalars[str], values: StepScalars[float]) -> dict[str, float]:
        """Tags (self) paired with values: {'train/loss': 0.1, ...}."""
        return dict(zip(self.values(), values.values()))


def _step_tags(scope: str) -> StepScalars[str]:
    return StepScalars(*(f"{scope}/{f.name}" for f in dataclasses.fields(StepScalars)))


TRAIN, EPOCH = _step_tags("train"), _step_tags("epoch")
NONFINITE_STEPS = "train/nonfinite_steps"
"""Optimizer steps skipped so far because their loss or gradient was not finite (logged when it grows)."""


@dataclass(frozen=True)
class ValTags:
    """The validation rollout's scores, at the epoch count."""

    psnr: str = "val/psnr"
    """Average PSNR of the rollout from the first frame."""
    best_psnr: str = "val/best_psnr"
    """The best of those so far."""
    baseline_psnr: str = "val/baseline_psnr"
    """Average PSNR of copying the first frame."""
    one_step_psnr: str = "val/one_step_psnr"
    """Average PSNR of each frame predicted from the true previous frame."""
    copy_previous_psnr: str = "val/copy_previous_psnr"
    """Average PSNR of copying the true previous frame."""
    rollout: str = "val/rollout"
    """An image: truth, rollout and pose at frames spread over the video."""


@dataclass(frozen=True)
class FinalTags:
    """The evaluation of the best weights at the end of a run."""

    psnr: str = "final/psnr"
    """Average PSNR of the rollout, at the epoch count."""
    baseline_psnr: str = "final/baseline_psnr"
    """Average PSNR of copying the first frame, at the epoch count."""
    psnr_per_frame: str = "final/psnr_per_frame"
    """PSNR of each frame, at the frame's index."""


VAL, FINAL = ValTags(), FinalTags()
# The scalars the HParams dashboard shows next to each run's settings.
HPARAM_METRICS = (VAL.psnr, VAL.best_psnr, FINAL.psnr, EPOCH.loss)


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


def read_hparams(tag_to_content: dict[str, bytes]) -> dict[str, Any]:
    """A run's settings from the content of its `hparams` plugin tags (empty for a run written without them)."""
    content = tag_to_content.get(SESSION_START_INFO_TAG)
    if content is None:
        return {}
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: _setting(getattr(value, kind)) for name, value in sorted(session.hparams.items()) if (kind := value.WhichOneof("kind"))}


def _setting(value: Any) -> Any:
    """HParams store every number as a float: give back a whole one (a seed, an epoch count) as an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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

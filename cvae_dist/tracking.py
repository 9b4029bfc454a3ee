"""What a run logs: the tags of its scalars, the HParams record and image strips, and the trackers
that receive them (TensorBoard always; wandb and MLflow with --report_to).

The trainer logs under the tags below, and the report and the sweep summary read them back, so
the names live here only.

Accelerate's own `init_trackers(config=...)` writes hparams into a separate event folder with
no metrics, which leaves TensorBoard's HParams dashboard empty. Writing the hparams summary
into the run's own event file, with the metric tags declared, makes each run show there with
its metrics (as PyTorch Lightning does).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG
from torch.utils.tensorboard.summary import hparams

from cvae_dist.errors import UserError

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


# ---- the trackers: TensorBoard always, wandb and MLflow on request -----------------------------

# What each --report_to adds to TensorBoard, which every run writes: tb_summary, report and the
# search's pruning read a run's events.
REPORT_TO = {"tensorboard": (), "wandb": ("wandb",), "mlflow": ("mlflow",), "all": ("wandb", "mlflow")}
# In the run folder: each tracker's run id, so that a resumed or requeued run continues the same run.
RUN_IDS = "trackers.json"
# wandb's project and MLflow's experiment, unless WANDB_PROJECT or MLFLOW_EXPERIMENT_NAME name another.
PROJECT = "cvae-dist"
# The scalars of each tag scope are logged at optimizer steps (train/) or epochs (the others).
STEP_AXIS = {"train": "step", "epoch": "epoch", "val": "epoch", "final": "epoch"}


def trackers(report_to: str, run_folder: Path, logging_dir: Path) -> list:
    """The trackers --report_to asks for, as Accelerator(log_with=...) takes them; a UserError if one is not installed."""
    missing = [name for name in REPORT_TO[report_to] if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--report_to {report_to}: {' and '.join(missing)} not installed here; pip install -e '.[{','.join(missing)}]'")
    others = {"wandb": WandBRun, "mlflow": MLflowRun}
    return [TensorBoardRun(logging_dir), *(others[name](run_folder) for name in REPORT_TO[report_to])]


def log_settings(accelerator, settings: dict[str, Any]) -> None:
    """A run's settings to every tracker: HParams, wandb's config, MLflow's params."""
    for tracker in accelerator.trackers:
        tracker.log_settings(settings)


def log_image(accelerator, tag: str, image: np.ndarray, epoch: int) -> None:
    """An HWC uint8 image (a frame_strip) to every tracker."""
    for tracker in accelerator.trackers:
        tracker.log_image(tag, image, epoch)


def log_psnr_per_frame(accelerator, psnr: np.ndarray) -> None:
    """The final evaluation's PSNR of each frame to every tracker (frame 0 is given, not predicted)."""
    for tracker in accelerator.trackers:
        tracker.log_psnr_per_frame({frame: float(psnr[frame]) for frame in range(1, len(psnr))})


class TensorBoardRun(TensorBoardTracker):
    """Accelerate's TensorBoard tracker, writing <logging_dir>/tb."""

    def __init__(self, logging_dir: Path):
        super().__init__(TB_PROJECT, logging_dir)

    def log_settings(self, settings: dict[str, Any]) -> None:
        write_hparams(self.writer, settings)

    def log_image(self, tag: str, image: np.ndarray, epoch: int) -> None:
        self.log_images({tag: image}, step=epoch, dataformats="HWC")

    def log_psnr_per_frame(self, psnr: dict[int, float]) -> None:
        for frame, value in psnr.items():
            self.writer.add_scalar(FINAL.psnr_per_frame, value, frame)


class WandBRun(WandBTracker):
    """Accelerate's wandb tracker: the run folder's name, the same wandb run after a resume, an x axis per tag scope."""

    def __init__(self, run_folder: Path):
        super().__init__(os.environ.get("WANDB_PROJECT", PROJECT), name=run_folder.name)
        self.run_folder = run_folder

    def start(self) -> None:
        run_id = saved_run_id(self.run_folder, self.name)
        if run_id is not None:
            self.init_kwargs.update(id=run_id, resume="allow")
        super().start()
        # wandb drops a row logged at a step below an earlier row's, and epochs count more slowly
        # than optimizer steps: each scope's scalars get their own x axis instead of wandb's step.
        for scope, axis in STEP_AXIS.items():
            self.run.define_metric(f"{scope}/*", step_metric=axis)
        save_run_id(self.run_folder, self.name, self.run.id)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        super().log({**values, _axis(values): step}, **kwargs)

    def log_settings(self, settings: dict[str, Any]) -> None:
        self.run.config.update(settings, allow_val_change=True)

    def log_image(self, tag: str, image: np.ndarray, epoch: int) -> None:
        import wandb

        self.run.log({tag: wandb.Image(image), _axis({tag: None}): epoch})

    def log_psnr_per_frame(self, psnr: dict[int, float]) -> None:
        import wandb

        table = wandb.Table(columns=["frame", "psnr"], data=[[frame, value] for frame, value in psnr.items()])
        self.run.log({FINAL.psnr_per_frame: wandb.plot.line(table, "frame", "psnr", title="PSNR per frame of the best weights")})


def _axis(values: dict) -> str:
    """The x axis of a log call's tags (each call logs tags of one scope)."""
    return STEP_AXIS[next(iter(values)).split("/")[0]]


class MLflowRun(MLflowTracker):
    """Accelerate's MLflow tracker: the run folder's name, the same MLflow run after a resume, images as PNG artifacts."""

    def __init__(self, run_folder: Path):
        super().__init__(experiment_name=PROJECT, run_name=run_folder.name)
        self.run_folder = run_folder

    def start(self) -> None:
        # MLFLOW_RUN_ID, which Accelerate reads, wins over the run folder's record.
        self.run_id = self.run_id or saved_run_id(self.run_folder, self.name)
        super().start()
        save_run_id(self.run_folder, self.name, self.active_run.info.run_id)

    def log_settings(self, settings: dict[str, Any]) -> None:
        import mlflow
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        # MLflow refuses to change a param, so a continued run adds only those it lacks: a setting
        # changed on resuming (--resume_from_checkpoint, say) keeps its first value there.
        logged = mlflow.get_run(self.active_run.info.run_id).data.params
        new = [(name, hparam_value(value)) for name, value in settings.items() if name not in logged]
        for start in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
            mlflow.log_params(dict(new[start : start + MAX_PARAMS_TAGS_PER_BATCH]))

    def log_image(self, tag: str, image: np.ndarray, epoch: int) -> None:
        import mlflow

        mlflow.log_image(image, artifact_file=f"{tag}/epoch-{epoch:04d}.png")

    def log_psnr_per_frame(self, psnr: dict[int, float]) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [Metric(FINAL.psnr_per_frame, value, now, frame) for frame, value in psnr.items()]
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            MlflowClient().log_batch(self.active_run.info.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])


def saved_run_id(run_folder: Path, tracker: str) -> str | None:
    """The id of the `tracker` run that the run in `run_folder` logged to (None: none yet)."""
    return _run_ids(run_folder).get(tracker)


def save_run_id(run_folder: Path, tracker: str, run_id: str) -> None:
    """Record the `tracker` run the run in `run_folder` logs to (replaced whole, so a kill leaves the old or the new file)."""
    path = run_folder / RUN_IDS
    staging = path.with_name(f".{RUN_IDS}.partial")
    staging.write_text(json.dumps({**_run_ids(run_folder), tracker: run_id}, indent=1) + "\n")
    staging.replace(path)


def _run_ids(run_folder: Path) -> dict[str, str]:
    path = run_folder / RUN_IDS
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the trackers' run ids ({err}); remove it to start new wandb/MLflow runs") from None

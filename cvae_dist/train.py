"""Train the course's conditional VAE with Hugging Face Accelerate.

    accelerate launch cvae_dist/train.py [--config FILE.yaml] [--flag value ...]

With no arguments it runs the demo: the built-in synthetic dataset (made on first use), the
`tiny` preset, on whatever device is there. `--help` lists every flag.

This is the only module that knows about processes and devices: data, model, rollout and
loss are plain PyTorch, and Accelerate supplies devices, precision, gradient accumulation,
distributed gradients, checkpoint state and the TensorBoard tracker.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (`accelerate launch cvae_dist/train.py`): import the package from the
    # repository rather than letting this folder's modules shadow top-level names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import contextlib
import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedType,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import Config, check_train_length, parse_args, val_length
from cvae_dist.data import dataset_root
from cvae_dist.data.course import CourseDataset, TrainWindows, WindowSampler, to_unit_float
from cvae_dist.errors import UserError, run_command
from cvae_dist.evaluate import Evaluation, evaluate_video, summary_line, write_evaluation
from cvae_dist.loss import cvae_loss
from cvae_dist.model import CVAE
from cvae_dist.rollout import recalibrate_batchnorm
from cvae_dist.schedules import KLAnnealer, teacher_forcing_coin, teacher_forcing_frames, teacher_forcing_ratio
from cvae_dist.tracking import TB_PROJECT, frame_strip, write_hparams

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
# Exit status after a preemption checkpoint: sysexits' EX_TEMPFAIL, "try again later". A Slurm
# script requeues the job on it (or a cluster lists it in RequeueExit) and resumes `latest`.
EXIT_REQUEUE = 75
# `accelerate launch` and torchrun report any failure of this script as status 1, which hides
# EXIT_REQUEUE from whoever started them; a batch script that needs the status names a file here.
STATUS_FILE_ENV = "CVAE_DIST_STATUS_FILE"


@dataclass
class TrainingState:
    """A run's progress, saved in every checkpoint through Accelerate's register_for_checkpointing."""

    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimizer steps taken."""
    batch_in_epoch: int = 0
    """Batches of the current epoch this process has consumed; a resume skips them."""
    beta: float = 0.0
    """KL weight of the latest step."""
    tfr: float = 1.0
    """Teacher-forcing ratio of the current epoch."""
    best_psnr: float = -math.inf
    """Best average validation PSNR so far."""
    best_epoch: int = -1
    """Epoch (1-based count of epochs done) that reached best_psnr."""
    nonfinite_steps: int = 0
    """Optimizer steps skipped because their loss or gradient was not finite."""
    nonfinite_streak: int = 0
    """Of those, how many in a row up to the latest step."""

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def collate_windows(samples):
    """Stack windows; the window indices stay a list of ints so they never travel to the device."""
    frames, labels, indices = zip(*samples)
    return torch.stack(frames), torch.stack(labels), list(indices)


class IndexedWindows(TrainWindows):
    """Training windows that also return their index, which keys each window's latent noise."""

    def __getitem__(self, index: int):
        return (*super().__getitem__(index), index)


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint; the job should be requeued."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None):
        super().__init__(f"stopped by {signal_name} after step {step}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopSignal:
    """SIGTERM or SIGUSR1 (a preemption, or a Slurm time limit ahead) asks the run to stop after
    the current optimizer step.

    The handler only sets a flag. Only some processes may get the signal, so all of them agree at
    each step boundary with a MAX all-reduce over a CPU (gloo) group, started at one step and
    read at the next: no step waits on the network or syncs the accelerator, and every process
    stops at the same step, one step after the first signal. One process just reads its flag.
    """

    def __init__(self, processes: int):
        self.group = dist.new_group(backend="gloo") if processes > 1 else None
        self.received = 0
        self.flag = torch.zeros(1, dtype=torch.int32)
        self.pending = None
        self.previous = {}

    def __enter__(self) -> StopSignal:
        self.previous = {sig: signal.signal(sig, self._receive) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.pending is not None:
            self.pending.wait()

    def _receive(self, signum, frame) -> None:
        self.received = signum

    def agreed(self) -> int:
        """The signal every process stops for now (0: none). Call on every process at every step boundary."""
        if self.group is None:
            return self.received
        stop = 0
        if self.pending is not None:
            self.pending.wait()
            stop = int(self.flag.item())
        self.flag = torch.tensor([self.received], dtype=torch.int32)
        self.pending = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return stop


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGTERM/SIGUSR1 to the training process, which stops them itself.

    Slurm signals every process of a job step; a worker that died of it would crash the step
    that the training process is finishing before it saves."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Trainer:
    def __init__(self, config: Config):
        self.config = config
        train = config.train
        self.save_root = Path(train.save_root)
        self.accelerator = make_accelerator(config)
        self.state = TrainingState(tfr=config.method.tfr)
        set_seed(train.seed)
        with self.accelerator.main_process_first():
            dataset = CourseDataset(
                dataset_root(config.data, progress=self.is_main),
                config.data.frame_H,
                config.data.frame_W,
                progress=self.is_main,
            )
            # Before any frame is read, so that a length the videos cannot give fails at once.
            check_train_length(config.data, *dataset.frame_count("train"))
            # Validation PSNRs are compared across runs, so a shorter rollout than asked is an error, not a note.
            val_length(config.data.val_vi_len, *dataset.frame_count("val"), shorter_ok=False)
            self.train_video, self.val_video = dataset.train(), dataset.val()
        self.windows = IndexedWindows(self.train_video, config.data.train_vi_len, config.data.partial)
        fast_windows = max(1, int(len(self.train_video.frames) * config.data.fast_partial) // config.data.train_vi_len)
        self.sampler = WindowSampler(self._windows_in_epoch(len(self.windows), fast_windows), config.data.shuffle, train.seed)

        model = CVAE(config.model)
        if train.ckpt_path is not None:
            ckpt.load_weights_into(model, ckpt.find_weights(train.ckpt_path, "--ckpt_path")[0])
        # DeepSpeed views every parameter as flat bytes, which channels-last weights are not.
        if train.channels_last and not self.uses_deepspeed:
            model = model.to(memory_format=torch.channels_last)
        if train.compile and train.recompute_activations and self.accelerator.mixed_precision != "no":
            # Accelerate's autocast is traced inside the compiled forward, but a checkpointed frame is
            # recomputed outside it, so the recomputation differs and autograd refuses it.
            raise UserError(f"--compile with {config.flag('recompute_activations')} needs --mixed_precision no (torch.compile cannot recompute autocast regions)")
        if train.compile:
            # In place rather than through Accelerate's dynamo plugin, whose OptimizedModule wrapper
            # would prefix every key that `save_model` writes with `_orig_mod.`.
            try:
                model.compile(backend=train.compile_backend)
            except torch._dynamo.exc.InvalidBackend:
                raise UserError(f"--compile_backend {train.compile_backend}: not a torch.compile backend here (see torch._dynamo.list_backends())") from None
        optimizer_class = torch.optim.AdamW if train.optim == "AdamW" else torch.optim.Adam
        optimizer = optimizer_class(model.parameters(), lr=train.lr, **fast_optimizer(self.accelerator.device))
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=train.lr_milestones, gamma=train.lr_gamma)
        loader = DataLoader(
            self.windows,
            batch_size=train.batch_size,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
            collate_fn=collate_windows,
            worker_init_fn=ignore_stop_signals,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=config.data.num_workers > 0,
        )
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(model, optimizer, loader, scheduler)
        self.accelerator.register_for_checkpointing(self.state)
        self.annealer = KLAnnealer(
            kind=config.method.kl_anneal_type,
            total=self._annealing_length(),
            n_cycle=config.method.kl_anneal_cycle,
            ratio=config.method.kl_anneal_ratio,
        )
        if self.batches_in_epoch(0) == 0:
            raise UserError(
                f"{len(self.windows)} training windows are too few for --batch_size {train.batch_size} "
                f"on {self.accelerator.num_processes} process(es)"
            )

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def uses_deepspeed(self) -> bool:
        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    def _windows_in_epoch(self, all_windows: int, fast_windows: int):
        data = self.config.data

        def windows_in_epoch(epoch: int) -> int:
            return min(fast_windows, all_windows) if data.fast_train and epoch < data.fast_train_epoch else all_windows

        return windows_in_epoch

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches each process sees in an epoch (the last incomplete batch is dropped)."""
        return self.sampler.windows_in_epoch(epoch) // (self.config.train.batch_size * self.accelerator.num_processes)

    def steps_in_epoch(self, epoch: int) -> int:
        return math.ceil(self.batches_in_epoch(epoch) / self.config.train.gradient_accumulation_steps)

    def _annealing_length(self) -> int:
        epochs = self.config.train.num_epoch
        if self.config.method.kl_anneal_unit == "epoch":
            return epochs
        return sum(self.steps_in_epoch(e) for e in range(epochs))

    # ---- the loop -------------------------------------------------------------------------

    def fit(self) -> Evaluation:
        train = self.config.train
        try:
            with StopSignal(self.accelerator.num_processes) as self.stop:
                self.start_run()
                if self.state.epoch >= train.num_epoch and self.is_main:
                    print(f"all {train.num_epoch} epochs were already trained: evaluating the best weights again", flush=True)
                total_steps = sum(self.steps_in_epoch(e) for e in range(train.num_epoch))
                progress = tqdm(total=total_steps, initial=self.state.step, desc="training", unit="step", disable=not self.is_main, dynamic_ncols=True)
                with progress:  # closed on any exit, so that an error message starts on its own line
                    self._train_epochs(progress)
        except BaseException:
            self.accelerator.end_training()  # flush what TensorBoard has of a run that stops early
            raise
        return self.finish()

    def _train_epochs(self, progress) -> None:
        train = self.config.train
        while self.state.epoch < train.num_epoch:
            epoch_means = self.train_epoch(progress)
            self.state.epoch += 1
            self.scheduler.step()
            self.accelerator.log(epoch_means, step=self.state.epoch)
            if self.state.epoch % train.eval_every == 0 or self.state.epoch == train.num_epoch:
                self.validate(progress)
            due = self.state.epoch % train.per_save == 0 or self.state.epoch == train.num_epoch
            if due and self.state.nonfinite_streak == 0:  # keep the last good checkpoint the newest
                self.save_checkpoint("epoch")

    def train_epoch(self, progress) -> dict[str, float]:
        epoch = self.state.epoch
        self.state.tfr = teacher_forcing_ratio(epoch, self.config.method.tfr, self.config.method.tfr_sde, self.config.method.tfr_d_step)
        self.loader.set_epoch(epoch)
        batches = self.loader
        if self.state.batch_in_epoch:
            batches = self.accelerator.skip_first_batches(self.loader, self.state.batch_in_epoch)
            batches.set_epoch(epoch)  # a fresh loader would otherwise restart at epoch 0's order
        progress.set_description(f"epoch {epoch + 1}/{self.config.train.num_epoch}")
        self.model.train()
        window_sums = self._zero_sums()
        epoch_sums = self._zero_sums()
        for frames, labels, indices in batches:
            sums = self.train_batch(frames, labels, indices)
            for key in sums:
                window_sums[key] += sums[key]
                epoch_sums[key] += sums[key]
            self.state.batch_in_epoch += 1
            if self.accelerator.sync_gradients:
                self.state.step += 1
                progress.update(1)
                if self.state.step % self.config.train.log_every == 0:
                    means = self._log_means(window_sums, "train")
                    progress.set_postfix(loss=f"{means['train/loss']:.4g}", refresh=False)
                    window_sums = self._zero_sums()
                self._step_boundary(epoch)
        self.state.batch_in_epoch = 0
        means = self._means(epoch_sums, "epoch")
        means["epoch/tfr"] = self.state.tfr
        means["epoch/beta"] = self.state.beta
        means["epoch/lr"] = self.scheduler.get_last_lr()[0]
        return means

    def _step_boundary(self, epoch: int) -> None:
        """After each optimizer step: the scheduled checkpoint, and a stop if a signal asked for one.

        No checkpoint is written while non-finite steps are being skipped, so that the last one
        written stays the last good one."""
        stop = self.stop.agreed()
        steps = self.config.train.checkpointing_steps
        scheduled = steps and self.state.step % steps == 0 and self.state.batch_in_epoch < self.batches_in_epoch(epoch)
        saved = None
        if (scheduled or stop) and self.state.nonfinite_streak == 0:
            saved = self.save_checkpoint("preemption" if stop else "steps")
        if stop:
            raise Preempted(signal.Signals(stop).name, self.state.step, saved or self._latest_checkpoint())

    def _latest_checkpoint(self) -> Path | None:
        found = ckpt.list_checkpoints(self.save_root)
        return found[-1] if found else None

    def train_batch(self, frames: torch.Tensor, labels: torch.Tensor, indices: list[int]) -> dict[str, torch.Tensor]:
        """One micro-batch: forward, loss, backward, and (at accumulation boundaries) the optimizer step."""
        method = self.config.method
        epoch, state = self.state.epoch, self.state
        frames, labels = to_unit_float(frames), to_unit_float(labels)
        step_in_epoch = state.batch_in_epoch // self.config.train.gradient_accumulation_steps
        if method.tfr_coin == "frame":
            teacher_forcing = teacher_forcing_frames(state.tfr, self.config.train.seed, epoch, indices, frames.shape[1] - 1).to(frames.device)
        else:
            coin_batch = step_in_epoch if method.tfr_coin == "batch" else None
            teacher_forcing = teacher_forcing_coin(state.tfr, self.config.train.seed, epoch, coin_batch)
        state.beta = self.annealer.beta(epoch if method.kl_anneal_unit == "epoch" else state.step)
        with self.accelerator.accumulate(self.model):
            with self.deepspeed_autocast():
                noise = self.latent_noise(indices, frames)
                out = self.model(frames, labels, noise, teacher_forcing, recompute=self.config.train.recompute_activations,
                                 one_step=method.one_step_weight > 0)
            terms = cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, state.beta, method.kl_last_frame_only,
                              out.one_step, method.one_step_weight)
            self.accelerator.backward(terms.total)
            grad_norm = torch.zeros((), device=frames.device)
            finite = True
            if self.accelerator.sync_gradients:
                max_norm = self.config.train.max_grad_norm or math.inf
                norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
                # DeepSpeed clips inside backward() (see make_accelerator) and reports the norm as a float.
                grad_norm = torch.as_tensor(0.0 if norm is None else norm, dtype=torch.float32, device=frames.device)
                finite = self._step_is_finite(terms.total, grad_norm)
            if finite or self.accelerator.scaler is not None:
                # With fp16 the GradScaler skips a non-finite step itself and must see it to lower its scale.
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {
            "loss": terms.total.detach(),
            "mse": terms.mse.detach(),
            "kl": terms.kl.detach(),
            # torch.full, not torch.tensor: copying a host value to a GPU would wait for the whole step.
            "teacher_forcing": teacher_forcing[:, 1:].float().mean() if isinstance(teacher_forcing, torch.Tensor)
            else torch.full((), float(teacher_forcing), device=frames.device),
            "grad_norm": grad_norm.detach().float(),
            "batches": torch.ones((), device=frames.device),
        }

    def _step_is_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether the optimizer step about to be taken has a finite loss and gradient; counts those that do not.

        Skipping a step needs the answer on the host: one sync per optimizer step (not per
        micro-batch), on a scalar that is ready once the gradients are. A non-finite loss on any
        process makes the gradients non-finite, and DDP's all-reduce spreads them, so every
        process sees the same global gradient norm and takes the same decision.
        """
        if not self.config.train.skip_nonfinite:
            return True
        state = self.state
        if bool(torch.isfinite(loss.detach().float() + grad_norm)):
            state.nonfinite_streak = 0
            return True
        state.nonfinite_steps += 1
        state.nonfinite_streak += 1
        step, streak = state.step + 1, state.nonfinite_streak
        self.accelerator.log({"train/nonfinite_steps": state.nonfinite_steps}, step=step)  # logged when it changes
        if self.is_main:
            tqdm.write(f"warning: step {step}: non-finite loss or gradient, step skipped ({streak} in a row)", file=sys.stderr)
        if streak >= self.config.train.max_nonfinite_steps:
            latest = self._latest_checkpoint()
            raise UserError(
                f"training stopped at step {step}: {streak} optimizer steps in a row (steps {step - streak + 1}-{step}) had a "
                f"non-finite loss or gradient; the last checkpoint, written before them, is {latest or 'none'} "
                "(lower --lr, or raise --max_nonfinite_steps)"
            )
        return False

    def deepspeed_autocast(self):
        """Autocast to DeepSpeed's 16-bit weights. Accelerate autocasts a prepared model's forward for
        its own mixed precision, but DeepSpeed's bf16/fp16 engine leaves the float32 frames uncast."""
        if self.uses_deepspeed and (self.model.bfloat16_enabled() or self.model.fp16_enabled()):
            dtype = torch.bfloat16 if self.model.bfloat16_enabled() else torch.float16
            return torch.autocast(self.accelerator.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def latent_noise(self, indices: list[int], frames: torch.Tensor) -> torch.Tensor:
        """eps of the reparameterization, drawn per window from (seed, epoch, window index).

        Keying the noise on the window rather than on a global stream makes a run independent
        of how its batches are split across processes or accumulation steps, and of resuming.
        """
        batch, steps, _, height, width = frames.shape
        noise = torch.empty((batch, steps - 1, self.config.model.N_dim, height, width), device=frames.device)
        generator = torch.Generator(device=frames.device)
        for row, window in enumerate(indices):
            generator.manual_seed((self.config.train.seed << 40) ^ (self.state.epoch << 24) ^ window)
            noise[row].normal_(generator=generator)
        return noise

    def _zero_sums(self) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        return {key: torch.zeros((), device=device) for key in ("loss", "mse", "kl", "teacher_forcing", "grad_norm", "batches")}

    def _means(self, sums: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        """Averages since the last log, over batches and processes (one host sync per log)."""
        totals = self.accelerator.reduce(torch.stack(list(sums.values())), reduction="sum").tolist()
        values = dict(zip(sums, totals))
        batches = max(values.pop("batches"), 1.0)
        steps = max(batches / (self.accelerator.num_processes * self.config.train.gradient_accumulation_steps), 1.0)
        means = {f"{prefix}/{k}": v / batches for k, v in values.items() if k != "grad_norm"}
        means[f"{prefix}/grad_norm"] = values["grad_norm"] / (steps * self.accelerator.num_processes)
        return means

    def _log_means(self, sums: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        means = self._means(sums, prefix)
        means.update({f"{prefix}/beta": self.state.beta, f"{prefix}/tfr": self.state.tfr, f"{prefix}/lr": self.scheduler.get_last_lr()[0]})
        self.accelerator.log(means, step=self.state.step)
        return means

    # ---- validation, checkpoints, logging ---------------------------------------------------

    def recalibration_labels(self):
        """Pose labels of training windows evenly spaced over the video, in training-size batches, the same on every process."""
        count = min(self.config.method.bn_recalibration_windows, len(self.windows))
        indices = torch.linspace(0, len(self.windows) - 1, count).round().long().tolist() if count else []
        for start in range(0, count, self.config.train.batch_size):
            labels = torch.stack([self.windows[i][1] for i in indices[start : start + self.config.train.batch_size]])
            yield to_unit_float(labels.to(self.accelerator.device))

    def validate(self, progress) -> Evaluation:
        """Roll out the validation video; every process runs it so sharded models can gather weights."""
        model = self.accelerator.unwrap_model(self.model)
        # DeepSpeed's 16-bit weights need its own autocast here too, or BatchNorm's recalibration fails on them.
        autocast = self.deepspeed_autocast if self.uses_deepspeed else self.accelerator.autocast
        with autocast():
            recalibrate_batchnorm(model, self.recalibration_labels())
        evaluation = evaluate_video(
            model,
            self.val_video,
            self.accelerator.device,
            self.config.data.val_vi_len,
            seed=self.config.train.seed,
            autocast=autocast,
        )
        improved = evaluation.average > self.state.best_psnr
        if improved:
            self.state.best_psnr, self.state.best_epoch = evaluation.average, self.state.epoch
            self._write_sealed(self.save_root / ckpt.BEST, lambda staging: self.accelerator.save_model(self.model, staging), "best")
        if self.is_main:
            self.accelerator.log(
                {
                    "val/psnr": evaluation.average, "val/best_psnr": self.state.best_psnr, "val/baseline_psnr": evaluation.baseline_average,
                    "val/one_step_psnr": evaluation.one_step_average, "val/copy_previous_psnr": evaluation.copy_previous_average,
                },
                step=self.state.epoch,
            )
            self._log_strip("val/rollout", evaluation)
            progress.write(
                f"epoch {self.state.epoch}: validation PSNR {evaluation.average:.2f} dB" + (" (best)" if improved else "")
                + f"; one step ahead {evaluation.one_step_average:.2f} dB (copy previous {evaluation.copy_previous_average:.2f} dB)"
            )
        return evaluation

    def _log_strip(self, tag: str, evaluation: Evaluation) -> None:
        truth = to_unit_float(torch.from_numpy(self.val_video.frames[: len(evaluation.pred)].copy()))
        labels = to_unit_float(torch.from_numpy(self.val_video.labels[: len(evaluation.pred)].copy()))
        strip = frame_strip([truth, evaluation.pred, labels])
        self.accelerator.get_tracker("tensorboard").log_images({tag: strip}, step=self.state.epoch, dataformats="HWC")

    def _save_state(self, folder: Path) -> None:
        self.accelerator.save_state(str(folder))
        if self.uses_deepspeed:
            # DeepSpeed's save_state writes its own (sharded) format; the weights also go next to it
            # as safetensors, so a checkpoint folder serves evaluation and --ckpt_path as without DeepSpeed.
            self.accelerator.save_model(self.model, folder)

    def save_checkpoint(self, reason: str = "epoch") -> Path:
        """The whole training state (Accelerate's save_state), sealed and renamed into place; then rotation."""
        folder = ckpt.checkpoint_dir(self.save_root, self.state.step)
        self._write_sealed(folder, self._save_state, reason)
        if self.is_main:
            ckpt.rotate(self.save_root, self.config.train.checkpoints_total_limit)
        self.accelerator.wait_for_everyone()
        return folder

    def _write_sealed(self, folder: Path, write, reason: str) -> None:
        """Every process writes its part into a staging folder; the main process seals it with a
        manifest and renames it to `folder`, so a kill at any moment leaves no half checkpoint."""
        staging = ckpt.staging_dir(folder)
        if self.is_main:
            ckpt.clear_staging(folder)
        self.accelerator.wait_for_everyone()
        try:
            write(staging)
            self.accelerator.wait_for_everyone()
            if self.is_main:
                ckpt.seal(staging, folder, self.config, step=self.state.step, epoch=self.state.epoch, reason=reason)
        except OSError as err:
            raise UserError(f"{folder}: cannot write the checkpoint ({err.strerror or err}); the earlier ones are intact") from None
        self.accelerator.wait_for_everyone()

    def start_run(self) -> None:
        """Check the run folder and resume if asked (or if it holds this very run); then write the
        config and open TensorBoard. Nothing is written before the checks pass."""
        folder = self._decided_on_main(self._choose_start)
        if folder is not None:
            if (folder / ckpt.WEIGHTS).is_file():
                ckpt.check_compatible(self.accelerator.unwrap_model(self.model).state_dict(), folder / ckpt.WEIGHTS)
            elif self.accelerator.distributed_type != DistributedType.DEEPSPEED:
                # Accelerate would fall back to unpickling pytorch_model.bin; weights come only from safetensors.
                raise UserError(f"{folder}: no {ckpt.WEIGHTS} (model weights are only read from safetensors)")
            try:
                self.accelerator.load_state(str(folder))
            except (RuntimeError, ValueError, KeyError) as err:  # a state that does not fit this optimizer or scheduler
                raise UserError(f"{folder}: cannot resume from it ({str(err).splitlines()[0]})") from err
            if self.is_main:
                print(f"resumed from {folder} at epoch {self.state.epoch}, step {self.state.step}", flush=True)
        if self.is_main:
            self.save_root.mkdir(parents=True, exist_ok=True)
            ckpt.write_config(self.config, self.save_root)
        self.accelerator.init_trackers(TB_PROJECT)
        if self.is_main:
            accelerator = self.accelerator
            print(f"world size {accelerator.num_processes} ({accelerator.distributed_type.value}, {accelerator.device.type}, "
                  f"mixed precision {accelerator.mixed_precision})", flush=True)
            # After every check has passed, so that bad input still ends in a single error line.
            for note in self._setting_notes():
                print(note, file=sys.stderr, flush=True)
            write_hparams(self.accelerator.get_tracker("tensorboard", unwrap=True), self.config.flat())

    def _setting_notes(self) -> list[str]:
        """Settings that run, but not as the user likely meant: idle CPU cores, a KL weight that never rises."""
        notes = []
        if self.accelerator.device.type == "cpu":
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", self.accelerator.num_processes))
            notes.append(cpu_threads_note(torch.get_num_threads(), usable_cores() // max(local_processes, 1)))
        if self.annealer.stays_zero:
            method = self.config.method
            notes.append(
                f"warning: beta stays 0 for the whole run (the KL is never weighed): --kl_anneal_type {method.kl_anneal_type} "
                f"has {self.annealer.cycles} cycle(s) in {self.annealer.total} {method.kl_anneal_unit}(s); give each cycle at least "
                "2 (fewer --kl_anneal_cycle, more --num_epoch, or --kl_anneal_unit step)"
            )
        return [note for note in notes if note]

    def _choose_start(self) -> Path | None:
        folder, notes = ckpt.choose_start(self.config)
        for note in notes:
            print(note, file=sys.stderr, flush=True)
        return folder

    def _decided_on_main(self, decide):
        """Run `decide` on the main process only and give every process its result (or its UserError)."""
        outcome = [None]
        if self.is_main:
            try:
                outcome = [("result", decide())]
            except UserError as err:
                outcome = [("error", str(err))]
        broadcast_object_list(outcome)
        kind, value = outcome[0]
        if kind == "error":
            raise UserError(value)
        return value

    def finish(self) -> Evaluation:
        """Evaluate the best weights, write their CSV, plot and GIF, and log the per-frame PSNR."""
        self.accelerator.wait_for_everyone()
        evaluation = None
        if self.is_main:
            model, _ = ckpt.load_model(self.save_root / ckpt.BEST, self.accelerator.device)
            evaluation = evaluate_video(
                model, self.val_video, self.accelerator.device, self.config.data.val_vi_len, seed=self.config.train.seed, autocast=self.accelerator.autocast
            )
            write_evaluation(evaluation, self.val_video, self.save_root / "eval", title=f"{self.save_root.name}: PSNR per frame")
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
            for frame in range(1, len(evaluation.psnr)):
                tracker.add_scalar("final/psnr_per_frame", float(evaluation.psnr[frame]), frame)
            self.accelerator.log({"final/psnr": evaluation.average, "final/baseline_psnr": evaluation.baseline_average}, step=self.state.epoch)
        self.accelerator.end_training()
        return evaluation


def fast_optimizer(device: torch.device) -> dict[str, bool]:
    """Adam's fastest implementation on the device: one fused kernel on CUDA, batched (foreach) ops elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_threads_note(threads: int, cores_per_process: int) -> str | None:
    """A note when torch would leave CPU cores idle, as it does under a plain `accelerate launch`.

    Without `--cpu` (or `use_cpu` in its config) `accelerate launch` sets OMP_NUM_THREADS=1, which
    makes CPU training use one core whatever the machine has."""
    if threads >= cores_per_process:
        return None
    return (
        f"note: torch uses {threads} CPU thread(s) per process on {cores_per_process} free core(s) per process; "
        f"`accelerate launch --num_cpu_threads_per_process {cores_per_process}` (or OMP_NUM_THREADS={cores_per_process}) uses them all"
    )


def make_accelerator(config: Config) -> Accelerator:
    train = config.train
    on_cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # Several CPU processes (tests, laptops) talk over gloo, and so does DeepSpeed without a GPU
    # (it would otherwise ask for NCCL or oneCCL).
    gloo = on_cpu and (deepspeed or int(os.environ.get("WORLD_SIZE", "1")) > 1)
    accelerator = Accelerator(
        # cpu=True silently turns DeepSpeed off; without it Accelerate still lands on the CPU.
        cpu=on_cpu and not deepspeed,
        mixed_precision=train.mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=train.save_root, logging_dir=train.logging_dir or train.save_root),
        # The course steps its MultiStepLR once per epoch, not once per optimizer step.
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if gloo else [],
        # Batches come from pinned memory (on CUDA), so their copy to the device need not wait.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.is_main_process:
        print("warning: --mixed_precision fp16 does nothing on a CPU (Accelerate trains in fp32 there); use bf16 for mixed precision on a CPU", file=sys.stderr, flush=True)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed clips gradients itself; its config's "auto" would become 1.0 whatever --max_grad_norm says.
        deepspeed_config = accelerator.state.deepspeed_plugin.deepspeed_config
        if deepspeed_config.get("gradient_clipping", "auto") == "auto":
            deepspeed_config["gradient_clipping"] = train.max_grad_norm
        # DeepSpeed casts parameters but not buffers to 16 bits, and BatchNorm then refuses 16-bit
        # weights with float32 running statistics.
        for half in ("bf16", "fp16"):
            if deepspeed_config.get(half, {}).get("enabled") is True:
                deepspeed_config.setdefault("data_types", {}).setdefault("buffer_dtype", half)
    return accelerator


def parse_command_line(argv: list[str]) -> Config:
    """The run's settings, checked (config.validate); no arguments mean the demo."""
    if not argv:
        print(f"No arguments: running the demo ({DEMO_CONFIG}). `--help` lists every flag.", flush=True)
    return parse_args(argv, default_config=DEMO_CONFIG)


def _train(config: Config) -> int:
    started = time.perf_counter()
    trainer = Trainer(config)
    try:
        evaluation = trainer.fit()
    except Preempted as stop:
        if trainer.is_main:
            print(
                f"{stop}: checkpoint {stop.checkpoint}; continue with --resume_from_checkpoint latest "
                f"(exit status {EXIT_REQUEUE} asks for a requeue)",
                flush=True,
            )
        return EXIT_REQUEUE
    if evaluation is not None:
        minutes = (time.perf_counter() - started) / 60
        print(f"done in {minutes:.1f} min; best epoch {trainer.state.best_epoch}: {summary_line(evaluation)}")
        print(f"outputs in {config.train.save_root} (eval/ has the CSV, plot and GIF); tensorboard --logdir {config.train.logging_dir or config.train.save_root}")
    return 0


def record_status(status: int) -> None:
    """Write the exit status to the file $CVAE_DIST_STATUS_FILE names, if any, from global rank 0 only."""
    path = os.environ.get(STATUS_FILE_ENV)
    if path and int(os.environ.get("RANK", "0")) == 0:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"{status}\n")


def main(argv: list[str] | None = None) -> int:
    status = run_command(argv, parse_command_line, _train)
    record_status(status)
    return status


if __name__ == "__main__":
    raise SystemExit(main())

"""The training loop: epochs of optimizer steps, validation, checkpoints and logs."""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cvae_dist import checkpoint as ckpt
from cvae_dist.data.course import to_unit_float
from cvae_dist.evaluate import Evaluation, write_evaluation, write_gif
from cvae_dist.loss import cvae_loss
from cvae_dist.rollout import latent_noise
from cvae_dist.schedules import Schedules
from cvae_dist.tracking import (
    EPOCH,
    FINAL,
    TB_PROJECT,
    TRAIN,
    VAL,
    BatchScalars,
    StepScalars,
    frame_strip,
    log_image,
    log_psnr_per_frame,
    log_settings,
)
from cvae_dist.training.averages import Averages
from cvae_dist.training.build import Parts
from cvae_dist.training.ema import weight_average
from cvae_dist.training.guard import NonFiniteGuard, skips_on_device
from cvae_dist.training.precision import device_note, fast_math_note, uses_deepspeed
from cvae_dist.training.preemption import Preempted, StopSignal, shut_down_workers
from cvae_dist.training.profiling import StepProfiler
from cvae_dist.training.run_folder import RunFolder
from cvae_dist.training.state import TrainingState
from cvae_dist.training.validation import Validation, evaluate, validate


class Loop:
    """Fits a run's parts: `fit` runs the epochs, `train_epoch` its batches, `train_batch` one of them, `validate` the epoch's validation."""

    def __init__(self, parts: Parts, stop: StopSignal | None = None):
        # Without a StopSignal entered by the command (a benchmark, a notebook), signals keep their usual effect.
        self.parts, self.config, self.accelerator, self.stop = parts, parts.config, parts.accelerator, stop or StopSignal()
        self.model, self.optimizer, self.scheduler = parts.model, parts.optimizer, parts.scheduler
        self.state = TrainingState(tfr=self.config.method.tfr)
        self.accelerator.register_for_checkpointing(self.state)
        self.average = weight_average(self.config, self.accelerator, parts.network)
        self.folder = RunFolder(self.accelerator, self.config, self.model, parts.network, self.average)
        train = self.config.train
        self.schedules = Schedules.of_run(self.config.method, train.seed, train.num_epoch, parts.steps_in_epoch)
        self.guard = NonFiniteGuard(self.accelerator, train, self.state, self.folder.latest, self._skips_on_device())
        self.is_main = self.accelerator.is_main_process
        profiled = train.profile_steps if self.is_main else 0
        self.profiler = StepProfiler(self.folder.root / ckpt.PROFILE, profiled, train.profile_wait, self.accelerator.device)

    def _skips_on_device(self) -> torch.optim.Optimizer | None:
        """The optimizer, where it can skip a non-finite step on the device (see NonFiniteGuard): a fused
        torch optimizer (not DeepSpeed's), and no weight average, which must know on the host whether to follow the step."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # the torch optimizer inside Accelerate's wrapper
        plain = self.average is None and not uses_deepspeed(self.accelerator)
        return optimizer if plain and skips_on_device(optimizer) else None

    def fit(self) -> Evaluation | None:
        """Train (or go on training) for --num_epoch epochs, then evaluate the best weights (the evaluation on the main process)."""
        try:
            self.stop.agree_across(self.accelerator.num_processes)
            self._start()
            with self.stop.deferred():
                self._train_epochs()
            with self.stop.immediate("the final evaluation"):
                return self.finish()
        except BaseException:
            self.accelerator.end_training()  # flush what TensorBoard has of a run that stops early
            raise
        finally:
            self.folder.release()

    def _train_epochs(self) -> None:
        """The epochs not yet trained, each followed by its validation and checkpoint; the loader's workers end with them."""
        train, state = self.config.train, self.state
        total = sum(self.parts.steps_in_epoch(e) for e in range(train.num_epoch))
        self.progress = tqdm(total=total, initial=state.step, desc="training", unit="step", disable=not self.is_main, dynamic_ncols=True)
        try:
            with self.progress, self.profiler:  # the bar closed on any exit, so that an error message starts on its own line
                if state.validation_due:  # a stop cut the last validation short
                    self._end_epoch()
                while state.epoch < train.num_epoch:
                    means = self.train_epoch()
                    state.epoch += 1
                    self.scheduler.step()
                    self.accelerator.log(EPOCH.of(means), step=state.epoch)
                    state.validation_due = state.epoch % train.eval_every == 0 or state.epoch == train.num_epoch
                    self._end_epoch()
        finally:
            shut_down_workers(self.parts.loader)

    def _end_epoch(self) -> None:
        """The epoch's validation if due (a stop during it checkpoints with it still due), then its checkpoint."""
        if self.state.validation_due:
            self.validate()
            self.state.validation_due = False
        self._save("epoch")

    def _start(self) -> None:
        """Resume if the run folder says so; then open the log. Notes come after every check, so that bad input ends in one line."""
        resumed = self.folder.start()
        self.accelerator.init_trackers(TB_PROJECT)
        if not self.is_main:
            return
        accelerator, epochs = self.accelerator, self.config.train.num_epoch
        if resumed is not None:
            print(f"resumed from {resumed} at epoch {self.state.epoch}, step {self.state.step}", flush=True)
        print(
            f"world size {accelerator.num_processes} ({accelerator.distributed_type.value}, {accelerator.device.type}, "
            f"mixed precision {accelerator.mixed_precision}{fast_math_note(accelerator.device.type, self.config.train.tf32)}"
            f"{', training windows on the device' if self.parts.data_on_device else ''})",
            flush=True,
        )
        for note in (device_note(accelerator), self.schedules.warning()):
            if note:
                print(note, file=sys.stderr, flush=True)
        log_settings(accelerator, self.config.flat())
        if self.state.epoch >= epochs:
            trained = f"all {epochs} epochs were" if epochs > 1 else "its one epoch was"
            print(f"{trained} already trained: evaluating the best weights again", flush=True)

    def train_epoch(self) -> StepScalars[float]:
        """The epoch's batches (after a resume, those not yet done); returns its averages to log."""
        state, loader = self.state, self.parts.loader
        epoch = state.epoch
        state.tfr = self.schedules.tfr(epoch)
        loader.set_epoch(epoch)
        batches = loader
        if state.batch_in_epoch:
            batches = self.accelerator.skip_first_batches(loader, state.batch_in_epoch)
            batches.set_epoch(epoch)  # a fresh loader would otherwise restart at epoch 0's order
        try:
            means = self._train_batches(batches)
        finally:
            if batches is not loader:  # the skipping loader has workers of its own
                shut_down_workers(batches)
        state.batch_in_epoch = 0
        return self._with_schedules(means)

    def _train_batches(self, batches) -> BatchScalars[float]:
        """Train on `batches`; returns their averages."""
        state, epoch = self.state, self.state.epoch
        self.progress.set_description(f"epoch {epoch + 1}/{self.config.train.num_epoch}")
        self.model.train()
        since_log, whole_epoch = Averages(self.accelerator), Averages(self.accelerator)
        for frames, labels, windows in batches:
            scalars = self.train_batch(frames, labels, windows)
            since_log.add(scalars)
            whole_epoch.add(scalars)
            state.batch_in_epoch += 1
            if self.accelerator.sync_gradients:
                state.step += 1
                self.progress.update(1)
                self.profiler.step()
                if state.step % self.config.train.log_every == 0:
                    self.guard.settle()
                    means = since_log.pop()
                    self.accelerator.log(TRAIN.of(self._with_schedules(means)), step=state.step)
                    self.progress.set_postfix(loss=f"{means.loss:.4g}", refresh=False)
                self._after_step(last_in_epoch=state.batch_in_epoch == self.parts.batches_in_epoch(epoch))
        self.guard.settle()
        return whole_epoch.pop()

    def _with_schedules(self, means: BatchScalars[float]) -> StepScalars[float]:
        lr = self.scheduler.get_last_lr()[0]
        return StepScalars(**dataclasses.asdict(means), beta=self.state.beta, tfr=self.state.tfr, lr=lr)

    def _after_step(self, last_in_epoch: bool) -> None:
        """The checkpoint due every --checkpointing_steps (the epoch's last step saves as the epoch's),
        and a stop if a signal asked for one."""
        self._stop_if_agreed()
        if not last_in_epoch:
            self._save("steps")

    def _stop_if_agreed(self) -> None:
        """At a point every process reaches alike: if the processes agree that a signal asked to stop, checkpoint and stop."""
        stop = self.stop.agreed()
        if stop:
            saved = self._save("preemption")
            raise Preempted(signal.Signals(stop).name, self.state.step, saved or self.folder.latest())

    def _save(self, reason: str) -> Path | None:
        """A checkpoint if one is due for `reason` (see RunFolder.due); None while non-finite steps are
        being skipped, so that the newest checkpoint stays the last good one."""
        state = self.state
        if not self.folder.due(state.step, state.epoch, reason):
            return None
        self.guard.settle()
        return None if state.nonfinite_streak else self.folder.save(state.step, state.epoch, reason)

    def train_batch(self, frames: torch.Tensor, labels: torch.Tensor, windows: list[int]) -> BatchScalars[torch.Tensor]:
        """One micro-batch: forward, loss, backward, and (at accumulation boundaries) the optimizer step."""
        method, state = self.config.method, self.state
        frames, labels = to_unit_float(frames), to_unit_float(labels)
        step_in_epoch = state.batch_in_epoch // self.config.train.gradient_accumulation_steps
        forced = self.schedules.teacher_forcing(state.epoch, step_in_epoch, windows, frames.shape[1] - 1)
        if isinstance(forced, torch.Tensor):  # a mask per frame; the first frame is always given, so it does not count
            forced = forced.to(frames.device)
            forced_share = forced[:, 1:].float().mean()
        else:  # torch.full, not torch.tensor: copying a host value to a GPU would wait for the whole step
            forced_share = torch.full((), float(forced), device=frames.device)
        state.beta = self.schedules.beta(state.epoch, state.step)
        with self.accelerator.accumulate(self.model):
            with self.parts.precision.autocast():
                noise = latent_noise(self.config.train.seed, state.epoch, windows, frames, self.config.model.N_dim)
                out = self.model(frames, labels, noise, forced, recompute=self.config.train.recompute_activations)
            terms = cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, state.beta, method.kl_last_frame_only)
            self.accelerator.backward(terms.total)
            grad_norm, finite = torch.zeros((), device=frames.device), True
            if self.accelerator.sync_gradients:
                norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.train.max_grad_norm or math.inf)
                # DeepSpeed clips inside backward() (see precision.make_accelerator) and reports the norm as a float.
                grad_norm = torch.as_tensor(0.0 if norm is None else norm, dtype=torch.float32, device=frames.device)
                finite = self.guard.allows(terms.total, grad_norm)
            stepped = self._step_optimizer(finite)
            self.optimizer.zero_grad(set_to_none=True)
            if self.average is not None and self.accelerator.sync_gradients and stepped:
                self.average.update(self.parts.network)
        return BatchScalars(terms.total.detach(), terms.mse.detach(), terms.kl.detach(), forced_share, grad_norm.detach())

    def _step_optimizer(self, finite: bool) -> bool:
        """Step the optimizer unless the guard refused the step (`finite` False); whether the weights moved.

        With fp16 the GradScaler skips a non-finite step itself and must see it to lower its scale. It
        calls a fused optimizer's step even to skip it, so that Accelerate's optimizer_step_was_skipped
        stays False: a lowered scale says so instead, read only for the weight average (it waits for the device)."""
        scaler = self.accelerator.scaler
        if not finite and scaler is None:
            return False
        scale = scaler.get_scale() if scaler is not None and self.average is not None else None
        self.optimizer.step()
        if scale is not None and scaler.get_scale() < scale:
            return False
        return finite and not self.accelerator.optimizer_step_was_skipped

    def validate(self) -> Validation:
        """The epoch's validation (see validation.validate; a stop during it checkpoints), the best weights kept, the scores logged."""
        validation = validate(self.parts, on_frame=self._stop_if_agreed, model=self.average.module if self.average else None)
        improved = self.folder.save_if_best(self.state, validation.psnr)
        if self.is_main:
            self._log_validation(validation, improved)
        return validation

    def _log_validation(self, validation: Validation, improved: bool) -> None:
        epoch, video = self.state.epoch, self.parts.val_video
        scores = {
            VAL.psnr: validation.psnr,
            VAL.best_psnr: self.state.best_psnr,
            VAL.baseline_psnr: validation.baseline_psnr,
            VAL.one_step_psnr: validation.one_step_psnr,
            VAL.copy_previous_psnr: validation.copy_previous_psnr,
        }
        self.accelerator.log(scores, step=epoch)
        length = len(validation.rollout)
        truth, labels = (to_unit_float(torch.from_numpy(frames[:length].copy())) for frames in (video.frames, video.labels))
        strip = frame_strip([truth, validation.rollout, labels])
        log_image(self.accelerator, VAL.rollout, strip, epoch)
        if self.config.train.store_visualization:
            write_gif(validation.rollout, video, self.folder.root / ckpt.EVAL / f"rollout-epoch-{epoch}.gif")
        tqdm.write(
            f"epoch {epoch}: validation PSNR {validation.psnr:.2f} dB"
            + (" (best)" if improved else "")
            + f"; one step ahead {validation.one_step_psnr:.2f} dB (copy previous {validation.copy_previous_psnr:.2f} dB)"
        )

    def finish(self) -> Evaluation | None:
        """Evaluate the best weights, write their CSV, plot and GIF, and log the per-frame PSNR (on the main process)."""
        self.accelerator.wait_for_everyone()
        evaluation = None
        if self.is_main:
            model, _ = ckpt.load_model(self.folder.root / ckpt.BEST, self.accelerator.device)
            evaluation = evaluate(self.parts, model)
            write_evaluation(evaluation, self.parts.val_video, self.folder.root / ckpt.EVAL, title=f"{self.folder.root.name}: PSNR per frame")
            log_psnr_per_frame(self.accelerator, evaluation.psnr)
            self.accelerator.log({FINAL.psnr: evaluation.average, FINAL.baseline_psnr: evaluation.baseline_average}, step=self.state.epoch)
        self.accelerator.end_training()
        return evaluation

"""A run's folder as every process of a run uses it: where the run starts, and checkpoints that
each process writes its part of and the main process seals (checkpoint.py has the file operations)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import Config
from cvae_dist.errors import UserError, disk_full
from cvae_dist.training.precision import uses_deepspeed
from cvae_dist.training.run_lock import RunLock


class RunFolder:
    """--save_root of a run: every process calls each method, which keeps the processes in step."""

    def __init__(self, accelerator: Accelerator, config: Config, model):
        self.accelerator, self.config, self.model = accelerator, config, model
        self.root = Path(config.train.save_root)
        self.lock = RunLock(self.root)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def start(self) -> Path | None:
        """Check the folder and resume if asked (or if it holds this very run), then write the config;
        returns the checkpoint resumed from. Nothing is written before the checks pass."""
        folder = self._decided_on_main(self._choose_start)
        if folder is not None:
            if (folder / ckpt.WEIGHTS).is_file():
                ckpt.check_compatible(self.accelerator.unwrap_model(self.model).state_dict(), folder / ckpt.WEIGHTS)
            elif not uses_deepspeed(self.accelerator):
                # Accelerate would fall back to unpickling pytorch_model.bin; weights come only from safetensors.
                raise UserError(f"{folder}: no {ckpt.WEIGHTS} (model weights are only read from safetensors)")
            try:
                self.accelerator.load_state(str(folder))
            except (RuntimeError, ValueError, KeyError) as err:  # a state that does not fit this optimizer or scheduler
                raise UserError(f"{folder}: cannot resume from it ({str(err).splitlines()[0]})") from err
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            ckpt.write_config(self.config, self.root)
        return folder

    def _choose_start(self) -> Path | None:
        notes = self._lock()
        try:
            folder, more = ckpt.choose_start(self.config)
        except BaseException:
            self.release()
            raise
        for note in notes + more:
            print(note, file=sys.stderr, flush=True)
        return folder

    def _lock(self) -> list[str]:
        """Make the folder if needed and take its lock: one run writes into a folder at a time."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--save_root {self.root}: a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return self.lock.acquire()
        except OSError as err:
            raise UserError(f"--save_root {self.root}: cannot write there ({err.strerror or err})") from None

    def release(self) -> None:
        """Give the folder's lock back (the main process holds it)."""
        self.lock.release()

    def _decided_on_main(self, decide: Callable):
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

    def maybe_save(self, step: int, epoch: int, reason: str) -> Path | None:
        """The whole training state (Accelerate's save_state) if a checkpoint is due for `reason`:
        'epoch' every --per_save epochs and after the last, 'steps' every --checkpointing_steps steps,
        'preemption' always. Then the oldest beyond --checkpoints_total_limit go."""
        train, every = self.config.train, self.config.train.checkpointing_steps
        due = {
            "epoch": epoch % train.per_save == 0 or epoch == train.num_epoch,
            "steps": every is not None and step % every == 0,
            "preemption": True,
        }[reason]
        if not due:
            return None
        folder = ckpt.checkpoint_dir(self.root, step)
        self._write_sealed(folder, self._save_state, step, epoch, reason)
        if self.is_main:
            ckpt.rotate(self.root, train.checkpoints_total_limit)
        self.accelerator.wait_for_everyone()
        return folder

    def save_best(self, step: int, epoch: int) -> None:
        self._write_sealed(self.root / ckpt.BEST, lambda staging: self.accelerator.save_model(self.model, staging), step, epoch, "best")

    def latest(self) -> Path | None:
        found = ckpt.list_checkpoints(self.root)
        return found[-1] if found else None

    def _save_state(self, folder: Path) -> None:
        self.accelerator.save_state(str(folder))
        if uses_deepspeed(self.accelerator):
            # DeepSpeed's save_state writes its own (sharded) format; the weights also go next to it
            # as safetensors, so a checkpoint folder serves evaluation and --ckpt_path as without DeepSpeed.
            self.accelerator.save_model(self.model, folder)

    def _write_sealed(self, folder: Path, write: Callable[[Path], None], step: int, epoch: int, reason: str) -> None:
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
                ckpt.seal(staging, folder, self.config, step=step, epoch=epoch, reason=reason)
        except (OSError, RuntimeError) as err:
            shutil.rmtree(staging, ignore_errors=True)
            intact = self._intact_note(folder)
            full = disk_full(err, folder, "the checkpoint", intact)
            if full is not None:
                raise full from None
            if isinstance(err, OSError):
                raise UserError(f"{folder}: cannot write the checkpoint ({err.strerror or err}); {intact}") from None
            raise
        self.accelerator.wait_for_everyone()

    def _intact_note(self, failed: Path) -> str:
        """What a failed write of `failed` leaves to go on from."""
        if failed.name == ckpt.BEST:
            return f"{failed} keeps the best weights so far"
        latest = self.latest()
        if latest is None:
            return "no checkpoint was complete yet: a new run starts from scratch"
        return f"--resume_from_checkpoint latest will use {latest}"

"""A run's folder as every process of a run uses it: where the run starts (the one place that
decides it), the best weights, and checkpoints that each process writes its part of and the main
process seals (checkpoint.py has the file operations)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors.torch import save_model

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import Config, is_bookkeeping, load_config_file
from cvae_dist.errors import UserError, disk_full
from cvae_dist.model import CVAE
from cvae_dist.training.ema import WeightAverage
from cvae_dist.training.precision import uses_deepspeed
from cvae_dist.training.run_lock import RunLock
from cvae_dist.training.state import TrainingState


class RunFolder:
    """--save_root of a run: every process calls each method, which keeps the processes in step."""

    def __init__(self, accelerator: Accelerator, config: Config, model, network: CVAE, average: WeightAverage | None = None):
        """`model` as Accelerate prepared it, `network` the module inside it."""
        self.accelerator, self.config, self.model, self.network, self.average = accelerator, config, model, network, average
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
                ckpt.check_compatible(self.network.state_dict(), folder / ckpt.WEIGHTS)
            elif not uses_deepspeed(self.accelerator):
                # Accelerate would fall back to unpickling pytorch_model.bin; weights come only from safetensors.
                raise UserError(f"{folder}: no {ckpt.WEIGHTS} (model weights are only read from safetensors)")
            try:
                self.accelerator.load_state(str(folder))
            except (RuntimeError, ValueError, KeyError) as err:  # a state that does not fit this optimizer or scheduler
                raise UserError(f"{folder}: cannot resume from it ({str(err).splitlines()[0]})") from err
            self._load_average(folder)
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            ckpt.write_config(self.config, self.root)
        return folder

    def _choose_start(self) -> Path | None:
        notes = self._lock()
        try:
            folder, more = choose_start(self.config)
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

    def _load_average(self, folder: Path) -> None:
        """The checkpoint's average of the weights; a checkpoint written without --use_ema starts it from its weights."""
        if self.average is None:
            return
        if (folder / ckpt.EMA_WEIGHTS).is_file():
            self.average.load(folder / ckpt.EMA_WEIGHTS)
            return
        self.average.copy_from(self.network)
        if self.is_main:
            print(f"note: {folder} has no {ckpt.EMA_WEIGHTS} (written without --use_ema): the average starts from its weights", file=sys.stderr)

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

    def due(self, step: int, epoch: int, reason: str) -> bool:
        """Whether a checkpoint is due for `reason`: 'epoch' every --per_save epochs and after the last,
        'steps' every --checkpointing_steps steps, 'preemption' always."""
        train, every = self.config.train, self.config.train.checkpointing_steps
        return {
            "epoch": epoch % train.per_save == 0 or epoch == train.num_epoch,
            "steps": every is not None and step % every == 0,
            "preemption": True,
        }[reason]

    def save(self, step: int, epoch: int, reason: str) -> Path:
        """The whole training state (Accelerate's save_state), then the oldest checkpoints beyond --checkpoints_total_limit go."""
        folder = ckpt.checkpoint_dir(self.root, step)
        self._write_sealed(folder, self._save_state, step, epoch, reason)
        if self.is_main:
            ckpt.rotate(self.root, self.config.train.checkpoints_total_limit)
        self.accelerator.wait_for_everyone()
        return folder

    def save_if_best(self, state: TrainingState, psnr: float) -> bool:
        """Write best/ if the validation PSNR `psnr` beats the run's best so far, recorded in `state`; whether it did."""
        improved = psnr > state.best_psnr
        if improved:
            state.best_psnr, state.best_epoch = psnr, state.epoch
            self._write_sealed(self.root / ckpt.BEST, self._save_model, state.step, state.epoch, "best")
        return improved

    def latest(self) -> Path | None:
        found = ckpt.list_checkpoints(self.root)
        return found[-1] if found else None

    def _save_state(self, folder: Path) -> None:
        self.accelerator.save_state(str(folder))
        if uses_deepspeed(self.accelerator):
            # DeepSpeed's save_state writes its own (sharded) format; the weights also go next to it
            # as safetensors, so a checkpoint folder serves evaluation and --ckpt_path as without DeepSpeed.
            self.accelerator.save_model(self.model, folder)
        if self.average is not None and self.is_main:
            self.average.save(folder / ckpt.EMA_WEIGHTS)

    def _save_model(self, folder: Path) -> None:
        """The weights that were validated (the average where there is one), as model.safetensors."""
        if uses_deepspeed(self.accelerator):
            # Under ZeRO-3 each process holds a shard of each weight; Accelerate gathers them whole.
            self.accelerator.save_model(self.average.module if self.average is not None else self.model, folder)
        elif self.is_main:
            # safetensors itself, as Accelerate's save_model writes it without DeepSpeed, but without the
            # unwrapping that imports DeepSpeed wherever it is installed.
            save_model(self.average.module if self.average is not None else self.network, str(folder / ckpt.WEIGHTS), metadata={"format": "pt"})

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


# ---- where a run starts ------------------------------------------------------------------------


def choose_start(config: Config) -> tuple[Path | None, list[str]]:
    """The checkpoint a run starts from (None: from scratch), after checking it may use its folder.

    A folder that holds a run with other settings is refused unless the user resumes it or
    overwrites it. A folder that holds a run with the same settings is continued from its
    latest checkpoint: re-running a command neither loses a finished run nor starts over.
    Called on the main process; returns notes to print.
    """
    train, save_root = config.train, Path(config.train.save_root)
    notes = ckpt.recover(save_root)
    if train.overwrite:
        removed = ckpt.clear_run(save_root)
        if removed:
            notes.append(f"note: --overwrite removed the previous run's {', '.join(removed)} from {save_root}")
        return None, notes
    resume = train.resume_from_checkpoint
    if _holds_run(save_root) and not _inside(save_root, resume):
        changed = _differences(_previous_config(save_root), config)
        if changed:
            raise UserError(
                f"--save_root {save_root} holds a run with other settings ({changed}); add --resume_from_checkpoint "
                "latest to continue it with these settings, --overwrite to replace it, or choose another --save_root"
            )
        if resume is None:
            notes.append(f"note: {save_root} already holds a run with these settings: continuing it (--overwrite starts afresh)")
            resume = "latest"
    if resume is None:
        return None, notes
    folder, more = ckpt.resolve_resume(save_root, resume)
    notes += more
    if folder is not None and json.loads((folder / ckpt.MANIFEST).read_text()).get("config_digest") != ckpt.run_identity(config):
        # A checkpoint written before a setting existed has another digest and no other value.
        changed = _differences(load_config_file(folder / ckpt.CONFIG), config)
        if changed:
            notes.append(f"note: resuming with settings that differ from the checkpoint's: {changed}")
    return folder, notes


def _holds_run(save_root: Path) -> bool:
    return (save_root / ckpt.CONFIG).exists() or (save_root / ckpt.BEST).exists() or bool(ckpt.list_checkpoints(save_root))


def _differences(before: Config, after: Config) -> str:
    """'lr 0.001 -> 0.01, num_epoch 2 -> 3': the settings that make `after` another run than `before`."""
    old, new = before.flat(), after.flat()
    changed = [f"{k} {old[k]} -> {new[k]}" for k in new if not is_bookkeeping(k) and old.get(k) != new[k]]
    return ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


def _inside(save_root: Path, resume: str | None) -> bool:
    """Whether --resume_from_checkpoint continues the run in save_root itself."""
    return resume == "latest" or (resume is not None and save_root.resolve() in Path(resume).resolve().parents)


def _previous_config(save_root: Path) -> Config:
    path = save_root / ckpt.CONFIG
    try:
        return load_config_file(path) if path.is_file() else _checkpoint_config(save_root)
    except UserError as err:
        raise UserError(
            f"--save_root {save_root} holds a run whose settings cannot be read ({err}); use --overwrite to replace it or choose another --save_root"
        ) from None


def _checkpoint_config(save_root: Path) -> Config:
    for folder in [*reversed(ckpt.list_checkpoints(save_root)), save_root / ckpt.BEST]:
        if (folder / ckpt.CONFIG).is_file():
            return load_config_file(folder / ckpt.CONFIG)
    raise UserError(f"{save_root / ckpt.CONFIG}: missing")

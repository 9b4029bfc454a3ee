"""The non-finite guard: a step whose loss or gradient is not finite is skipped, not taken."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from cvae_dist.config import TrainConfig
from cvae_dist.errors import UserError
from cvae_dist.tracking import NONFINITE_STEPS
from cvae_dist.training.state import TrainingState


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` can skip a step itself, on the device: torch's fused Adam and AdamW read a
    `found_inf` flag (as GradScaler sets it) and then leave weights, moments and step count as they were."""
    return bool(optimizer.defaults.get("fused"))


class NonFiniteGuard:
    """Counts skipped steps in the training state, and stops the run after --max_nonfinite_steps of them in a row.

    With `optimizer` (a fused one, and no loss scaler) the verdict stays on the
    device: the optimizer is told to skip a non-finite step itself, and the verdicts are read on the host
    only at `settle()` (at log points and before a checkpoint), so that a step never waits for the
    device. Otherwise the host needs each verdict before the optimizer steps: one sync per optimizer step.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        train: TrainConfig,
        state: TrainingState,
        latest_checkpoint: Callable[[], Path | None],
        optimizer: torch.optim.Optimizer | None = None,
    ):
        self.accelerator, self.train, self.state, self.latest_checkpoint = accelerator, train, state, latest_checkpoint
        self.optimizer = optimizer if train.skip_nonfinite else None
        self.pending: list[tuple[int, torch.Tensor]] = []
        """(step, non-finite flag on the device) of the steps taken since the last settle."""

    @property
    def on_device(self) -> bool:
        # A loss scaler sets the optimizer's found_inf itself, from its own check.
        return self.optimizer is not None and self.accelerator.scaler is None

    def allows(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether the optimizer step about to be taken should run: always on the device path (the
        optimizer then skips a non-finite step itself), else whether its loss and gradient are finite.

        A non-finite loss on any process makes the gradients non-finite, and DDP's all-reduce spreads
        them, so every process sees the same global gradient norm and takes the same decision.
        """
        if not self.train.skip_nonfinite:
            return True
        nonfinite = ~torch.isfinite(loss.detach().float() + grad_norm)
        step = self.state.step + 1
        if self.on_device:
            self.optimizer.found_inf = nonfinite.float()
            self.pending.append((step, nonfinite))
            return True
        finite = not bool(nonfinite)  # the host waits for the step here
        self._record(step, finite)
        return finite

    def settle(self) -> None:
        """Read the verdicts of the steps taken on the device path since the last settle (one host sync),
        then count, warn, log and stop as the host path does at each step."""
        if not self.pending:
            return
        steps, flags = zip(*self.pending)
        self.pending = []
        for step, nonfinite in zip(steps, torch.stack(flags).tolist()):
            self._record(step, not nonfinite)

    def _record(self, step: int, finite: bool) -> None:
        state = self.state
        if finite:
            state.nonfinite_streak = 0
            return
        state.nonfinite_steps += 1
        state.nonfinite_streak += 1
        streak = state.nonfinite_streak
        self.accelerator.log({NONFINITE_STEPS: state.nonfinite_steps}, step=step)  # logged when it changes
        if self.accelerator.is_main_process:
            scaler = " (the loss scaler lowers its scale)" if self.accelerator.scaler is not None else ""
            tqdm.write(f"warning: step {step}: non-finite loss or gradient, step skipped ({streak} in a row){scaler}", file=sys.stderr)
        if streak >= self.train.max_nonfinite_steps:
            raise UserError(
                f"training stopped at step {step}: {streak} optimizer steps in a row (steps {step - streak + 1}-{step}) had a "
                f"non-finite loss or gradient; the last checkpoint, written before them, is {self.latest_checkpoint() or 'none'} "
                "(lower --lr, or raise --max_nonfinite_steps)"
            )

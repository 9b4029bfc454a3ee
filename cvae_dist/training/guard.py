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


class NonFiniteGuard:
    """Counts skipped steps in the training state, and stops the run after --max_nonfinite_steps of them in a row."""

    def __init__(self, accelerator: Accelerator, train: TrainConfig, state: TrainingState, latest_checkpoint: Callable[[], Path | None]):
        self.accelerator, self.train, self.state, self.latest_checkpoint = accelerator, train, state, latest_checkpoint

    def allows(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether the optimizer step about to be taken has a finite loss and gradient.

        Skipping a step needs the answer on the host: one sync per optimizer step (not per
        micro-batch), on a scalar that is ready once the gradients are. A non-finite loss on any
        process makes the gradients non-finite, and DDP's all-reduce spreads them, so every
        process sees the same global gradient norm and takes the same decision.
        """
        state = self.state
        if not self.train.skip_nonfinite:
            return True
        if bool(torch.isfinite(loss.detach().float() + grad_norm)):
            state.nonfinite_streak = 0
            return True
        state.nonfinite_steps += 1
        state.nonfinite_streak += 1
        step, streak = state.step + 1, state.nonfinite_streak
        self.accelerator.log({NONFINITE_STEPS: state.nonfinite_steps}, step=step)  # logged when it changes
        if self.accelerator.is_main_process:
            tqdm.write(f"warning: step {step}: non-finite loss or gradient, step skipped ({streak} in a row)", file=sys.stderr)
        if streak >= self.train.max_nonfinite_steps:
            raise UserError(
                f"training stopped at step {step}: {streak} optimizer steps in a row (steps {step - streak + 1}-{step}) had a "
                f"non-finite loss or gradient; the last checkpoint, written before them, is {self.latest_checkpoint() or 'none'} "
                "(lower --lr, or raise --max_nonfinite_steps)"
            )
        return False

"""A run's progress: what a resumed run must know beyond the weights, optimizer and random state."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


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
    validation_due: bool = False
    """The last epoch's validation has not run yet (a stop cut it short); a resume runs it first."""

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

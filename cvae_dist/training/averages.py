"""The scalars of training batches, averaged over batches and processes for the log."""

from __future__ import annotations

import torch
from accelerate import Accelerator

# What each training batch reports (tracking.StepTags names them in the log).
KEYS = ("loss", "mse", "kl", "teacher_forcing", "grad_norm")


class Averages:
    """Sums kept on the device, so that a batch never waits for the host; averaged (one host sync) only when read."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.sums = self._zeros()

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(len(KEYS) + 1, device=self.accelerator.device)  # the last one counts batches

    def add(self, values: dict[str, torch.Tensor]) -> None:
        self.sums += torch.stack([*(values[key].float() for key in KEYS), torch.ones((), device=self.sums.device)])

    def pop(self) -> dict[str, float]:
        """The averages since the last pop, over batches and processes; then start again."""
        *totals, batches = self.accelerator.reduce(self.sums, reduction="sum").tolist()
        self.sums = self._zeros()
        batches = max(batches, 1.0)
        means = {key: total / batches for key, total in zip(KEYS, totals)}
        # A gradient norm is recorded once per optimizer step and process, at the step's last batch.
        processes = self.accelerator.num_processes
        steps = max(batches / (processes * self.accelerator.gradient_accumulation_steps), 1.0)
        means["grad_norm"] = totals[KEYS.index("grad_norm")] / (steps * processes)
        return means

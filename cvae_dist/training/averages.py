"""The scalars of training batches, averaged over batches and processes for the log."""

from __future__ import annotations

import dataclasses

import torch
from accelerate import Accelerator

from cvae_dist.tracking import BatchScalars

_COUNT = len(dataclasses.fields(BatchScalars))


class Averages:
    """Sums kept on the device, so that a batch never waits for the host; averaged (one host sync) only when read."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.sums = self._zeros()

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(_COUNT + 1, device=self.accelerator.device)  # the last one counts batches

    def add(self, scalars: BatchScalars[torch.Tensor]) -> None:
        self.sums += torch.stack([*(value.float() for value in scalars.values()), torch.ones((), device=self.sums.device)])

    def pop(self) -> BatchScalars[float]:
        """The averages since the last pop, over batches and processes; then start again."""
        *totals, batches = self.accelerator.reduce(self.sums, reduction="sum").tolist()
        self.sums = self._zeros()
        sums, means = BatchScalars(*totals), BatchScalars(*(total / max(batches, 1.0) for total in totals))
        # A gradient norm is recorded once per optimizer step and process, at the step's last batch.
        processes = self.accelerator.num_processes
        steps = max(batches / (processes * self.accelerator.gradient_accumulation_steps), 1.0)
        return dataclasses.replace(means, grad_norm=sums.grad_norm / (steps * processes))

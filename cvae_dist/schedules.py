"""The two schedules of the method: the KL weight beta and the teacher-forcing ratio.

Both are pure functions of a counter (an epoch or an optimizer step), so a resumed run
recomputes exactly the values an uninterrupted run would have used.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


def cyclical_beta(iteration: int, total: int, n_cycle: int, ratio: float, start: float = 0.0, stop: float = 1.0) -> float:
    """Fu et al. (2019) `frange_cycle_linear`, evaluated at one iteration.

    The run of `total` iterations is cut into `n_cycle` periods; in each, beta rises linearly
    from `start` to `stop` over the first `ratio` of the period, then holds at `stop`.
    """
    period = total / n_cycle
    # Fu et al. start cycle c at index int(c * period); with a fractional period that can be
    # one below c * period, so take the last cycle that has started by this iteration.
    cycle = min(math.floor(iteration / period), n_cycle - 1)
    if cycle + 1 < n_cycle and math.floor((cycle + 1) * period) <= iteration:
        cycle += 1
    position = iteration - math.floor(cycle * period)
    return min(stop, start + (stop - start) * position / (period * ratio))


@dataclass(frozen=True)
class KLAnnealer:
    """beta as a function of the annealing counter (epochs or optimizer steps, see `kl_anneal_unit`)."""

    kind: str
    """Cyclical, Monotonic (one cycle) or Without (beta = 1 throughout)."""
    total: int
    """Iterations in the whole run: epochs, or optimizer steps."""
    n_cycle: int
    """Cycles over the run (Cyclical only)."""
    ratio: float
    """Fraction of each cycle spent rising."""

    @property
    def cycles(self) -> int:
        return self.n_cycle if self.kind == "Cyclical" else 1

    @property
    def stays_zero(self) -> bool:
        """Whether beta is 0 at every iteration: a cycle no longer than one iteration ends before beta rises."""
        return self.kind != "Without" and self.total <= self.cycles

    def beta(self, iteration: int) -> float:
        if self.kind == "Without":
            return 1.0
        return cyclical_beta(iteration, max(self.total, self.cycles), self.cycles, self.ratio)


def teacher_forcing_ratio(epoch: int, tfr: float, tfr_sde: int, tfr_d_step: float) -> float:
    """The course's schedule: `tfr` until epoch `tfr_sde`, then `tfr_d_step` less every epoch, down to 0."""
    decayed_epochs = max(0, epoch - tfr_sde + 1)
    return max(0.0, round(tfr - tfr_d_step * decayed_epochs, 12))


def teacher_forcing_coin(ratio: float, seed: int, epoch: int, batch: int | None = None) -> bool:
    """Whether to feed true previous frames: one coin per epoch (batch=None) or per batch.

    The coin is a function of (seed, epoch, batch), so every rank and every resumed run
    throws the same one.
    """
    return random.Random(f"tf-coin/{seed}/{epoch}/{batch}").random() < ratio


def teacher_forcing_frames(ratio: float, seed: int, epoch: int, windows: list[int], steps: int) -> torch.Tensor:
    """Scheduled sampling per frame: a (len(windows), steps) bool mask, True where the true
    previous frame is fed. Keyed on (seed, epoch, window), like the latent noise, so that it does
    not depend on how batches are split across processes, nor on resuming."""
    generator = torch.Generator()
    mask = torch.empty(len(windows), steps)
    for row, window in enumerate(windows):
        generator.manual_seed((seed << 40) ^ (epoch << 24) ^ window ^ (1 << 62))
        mask[row].uniform_(generator=generator)
    return mask < ratio

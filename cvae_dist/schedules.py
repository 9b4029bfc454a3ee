"""The schedules of a run: the KL weight beta, teacher forcing and the learning rate.

Each is a pure function of where training is (an epoch, an optimizer step, a window), so a
resumed run recomputes exactly the values an uninterrupted run would have used. `Schedules`
reads the method's settings, so that the training loop only says where it is.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cvae_dist.config import MethodConfig, TrainConfig


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


def inert_settings(settings: Mapping[str, Any]) -> set[str]:
    """The method settings that cannot change a run with these settings (by their flag names): the
    cycles of a Monotonic or Without schedule, the decay of a teacher-forcing ratio that never
    changes over the run's epochs, the coin of one that is only ever 0 or 1. Comparisons leave them
    out of a grid point's name. Settings missing from `settings` are taken as inert by no rule."""
    inert = set()
    kind = settings.get("kl_anneal_type")
    if kind == "Without":
        inert |= {"kl_anneal_unit", "kl_anneal_cycle", "kl_anneal_ratio"}
    elif kind == "Monotonic":
        inert.add("kl_anneal_cycle")
    try:
        epochs = range(int(settings["num_epoch"]))
        ratios = {teacher_forcing_ratio(e, float(settings["tfr"]), int(settings["tfr_sde"]), float(settings["tfr_d_step"])) for e in epochs}
    except (KeyError, TypeError, ValueError):
        return inert
    if len(ratios) <= 1:
        inert |= {"tfr_sde", "tfr_d_step"}
    if ratios <= {0.0, 1.0}:
        inert.add("tfr_coin")
    return inert


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


@dataclass(frozen=True)
class Schedules:
    """beta and teacher forcing of one run, as functions of where training is."""

    method: MethodConfig
    """The settings of both schedules."""
    seed: int
    """Seed of the teacher-forcing coins."""
    annealer: KLAnnealer
    """beta against epochs or optimizer steps (--kl_anneal_unit)."""

    @classmethod
    def of_run(cls, method: MethodConfig, seed: int, epochs: int, steps_in_epoch: Callable[[int], int]) -> Schedules:
        """The schedules of a run of `epochs` epochs, epoch e having `steps_in_epoch(e)` optimizer steps."""
        total = epochs if method.kl_anneal_unit == "epoch" else sum(steps_in_epoch(e) for e in range(epochs))
        return cls(method, seed, KLAnnealer(method.kl_anneal_type, total, method.kl_anneal_cycle, method.kl_anneal_ratio))

    def beta(self, epoch: int, step: int) -> float:
        """The KL weight in epoch `epoch` (0-based) at optimizer step `step` (0-based, counted over the run)."""
        return self.annealer.beta(epoch if self.method.kl_anneal_unit == "epoch" else step)

    def tfr(self, epoch: int) -> float:
        """The teacher-forcing ratio of an epoch."""
        return teacher_forcing_ratio(epoch, self.method.tfr, self.method.tfr_sde, self.method.tfr_d_step)

    def teacher_forcing(self, epoch: int, step_in_epoch: int, windows: list[int], steps: int) -> bool | torch.Tensor:
        """What a batch of `windows` (each predicting `steps` frames) is fed at optimizer step
        `step_in_epoch`: true previous frames or not (one coin per epoch or per step), or a
        (len(windows), steps) mask of them per frame."""
        ratio = self.tfr(epoch)
        if self.method.tfr_coin == "frame":
            return teacher_forcing_frames(ratio, self.seed, epoch, windows, steps)
        return teacher_forcing_coin(ratio, self.seed, epoch, step_in_epoch if self.method.tfr_coin == "batch" else None)

    def warning(self) -> str | None:
        """A warning when beta never rises above 0 (the KL is never weighed)."""
        if not self.annealer.stays_zero:
            return None
        method, annealer = self.method, self.annealer
        return (
            f"warning: beta stays 0 for the whole run (the KL is never weighed): --kl_anneal_type {method.kl_anneal_type} "
            f"has {annealer.cycles} cycle(s) in {annealer.total} {method.kl_anneal_unit}(s); give each cycle at least "
            "2 (fewer --kl_anneal_cycle, more --num_epoch, or --kl_anneal_unit step)"
        )


def lr_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """The course's learning-rate schedule, stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=train.lr_milestones, gamma=train.lr_gamma)


def learning_rate(train: TrainConfig, epoch: int) -> float:
    """The learning rate after `epoch` epochs, as training's own scheduler has it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train.lr)
    scheduler = lr_scheduler(optimizer, train)
    for _ in range(epoch):
        optimizer.step()  # no gradient: changes nothing, but the scheduler expects a step before its own
        scheduler.step()
    return scheduler.get_last_lr()[0]

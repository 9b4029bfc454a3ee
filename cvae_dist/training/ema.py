"""The exponential moving average of a run's weights (--use_ema).

Kept in float32 beside the model, whatever precision trains it (a bf16 average would round every
small update away). Updated after every optimizer step that was taken, so a skipped non-finite step
leaves it as it was. The average is a network of its own: validation recalibrates and scores it,
best/ keeps it, and a checkpoint carries it as ema.safetensors with its update count, so a resumed
run goes on with the same bits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file

from cvae_dist.config import Config
from cvae_dist.errors import UserError
from cvae_dist.model import CVAE
from cvae_dist.training.precision import uses_deepspeed

UPDATES = "updates"  # the safetensors metadata key of the update count


class WeightAverage:
    """An exponential moving average of a model's parameters; its buffers follow the model's."""

    def __init__(self, config: Config, model: torch.nn.Module, device: torch.device):
        train = config.train
        self.decay_cap, self.warmup_power = train.ema_decay, train.ema_warmup_power
        # A fresh network rather than a deep copy: a model compiled in place would be copied with
        # a compiled call that still runs the original's weights.
        self.module = CVAE(config.model).to(device)
        if train.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.module.requires_grad_(False).eval()
        self.updates = 0
        self.copy_from(model)

    def decay(self) -> float:
        """The share of the average kept at the next update: diffusers' warm-up, capped at --ema_decay."""
        if not self.warmup_power:
            return self.decay_cap
        return min(self.decay_cap, 1 - (1 + self.updates) ** -self.warmup_power)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards `model`'s parameters by 1 - decay (the first update copies them)."""
        averaged = list(self.module.parameters())
        current = [p.detach().float() for p in model.parameters()]
        # One batched kernel for all parameters, as torch.optim.swa_utils' own EMA does.
        torch._foreach_lerp_(averaged, current, 1 - self.decay())
        self._copy_buffers(model)
        self.updates += 1

    @torch.no_grad()
    def copy_from(self, model: torch.nn.Module) -> None:
        for mine, theirs in zip(self.module.parameters(), model.parameters(), strict=True):
            mine.copy_(theirs)
        self._copy_buffers(model)

    def _copy_buffers(self, model: torch.nn.Module) -> None:
        # BatchNorm's statistics are re-estimated for the average before it is validated
        # (rollout.recalibrate_batchnorm); until then it carries the model's.
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    def save(self, path: Path) -> None:
        tensors = {key: value.contiguous() for key, value in self.module.state_dict().items()}
        save_file(tensors, str(path), metadata={UPDATES: str(self.updates)})

    def load(self, path: Path) -> None:
        """The average and its update count as `save` wrote them."""
        with safe_open(str(path), framework="pt") as file:
            self.updates = int(file.metadata()[UPDATES])
            state = {key: file.get_tensor(key) for key in file.keys()}
        self.module.load_state_dict(state)


def weight_average(config: Config, accelerator: Accelerator, network: CVAE) -> WeightAverage | None:
    """The run's average of `network` (unwrapped) if --use_ema asks for one."""
    if not config.train.use_ema:
        return None
    if uses_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3:
        # Under ZeRO-3 each process holds a shard of each parameter; averaging would gather the whole model every step.
        raise UserError(
            f"{config.flag('use_ema')}: DeepSpeed ZeRO stage 3 shards the weights across processes; "
            "average them under ZeRO-2 (accelerate_configs/deepspeed_zero2.yaml) or DDP"
        )
    return WeightAverage(config, network, accelerator.device)

"""What a run is made of: its videos, windows, model, optimizer and schedule, prepared by Accelerate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.optimizer import _get_fused_kernels_supported_devices
from torch.utils.data import DataLoader

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import Config, DataConfig, TrainConfig
from cvae_dist.data import check_train_length, dataset_root, val_length
from cvae_dist.data.course import CourseDataset, IndexedWindows, ResidentWindows, Video, WindowSampler, collate_windows
from cvae_dist.errors import UserError
from cvae_dist.model import CVAE
from cvae_dist.schedules import lr_scheduler
from cvae_dist.training.precision import Precision, make_accelerator, precision_of, uses_deepspeed
from cvae_dist.training.preemption import ignore_stop_signals


@dataclass
class Parts:
    """A run's parts, as the training loop uses them."""

    config: Config
    """The run's settings."""
    accelerator: Accelerator
    """Devices, processes, gradient accumulation, checkpoint state and the tracker."""
    model: torch.nn.Module
    """The network, prepared (wrapped for DDP or DeepSpeed where there are several processes)."""
    network: CVAE
    """The same network unwrapped: the module inside `model`, which evaluation, the weight average and best/ use."""
    optimizer: torch.optim.Optimizer
    """Adam or AdamW, prepared."""
    scheduler: torch.optim.lr_scheduler.LRScheduler
    """The learning-rate schedule, prepared; stepped once per epoch."""
    loader: DataLoader
    """The training windows of each epoch, this process's share, prepared."""
    sampler: WindowSampler
    """The order of the windows of each epoch."""
    windows: IndexedWindows
    """The training video cut into windows."""
    val_video: Video
    """The validation video."""
    precision: Precision
    """The number format of every forward pass."""
    data_on_device: bool
    """Whether the training windows are held on the device and batched there (--data_on_device)."""

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches each process sees in an epoch (the last incomplete batch is dropped)."""
        return self.sampler.windows_in_epoch(epoch) // (self.config.train.batch_size * self.accelerator.num_processes)

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps in an epoch (a last, shorter accumulation still steps)."""
        return math.ceil(self.batches_in_epoch(epoch) / self.config.train.gradient_accumulation_steps)


def build(config: Config, videos: tuple[Video, Video] | None = None) -> Parts:
    """Every part of a run, checked against its data; writes nothing. `videos`: the training and
    validation videos already in memory (tests), instead of those of the --DR dataset."""
    accelerator = make_accelerator(config)
    set_seed(config.train.seed)
    train_video, val_video = videos or load_videos(config, accelerator)
    windows = IndexedWindows(train_video, config.data.train_vi_len, config.data.partial)
    sampler = WindowSampler(windows_in_epoch(config.data, len(windows), len(train_video.frames)), config.data.shuffle, config.train.seed)
    model = make_model(config, accelerator)
    optimizer = make_optimizer(model, config.train, accelerator.device)
    resident = resident_windows(config.data, windows, accelerator.device)
    loader = training_loader(config, windows, sampler, resident)
    # Kept before Accelerate wraps it (DDP and DeepSpeed's engine hold this very module) rather than got back with
    # `accelerator.unwrap_model`, which imports DeepSpeed wherever it is installed: 1.5 to 2 s of CPU a run with the dev extras.
    network = model
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler(optimizer, config.train))
    precision = precision_of(accelerator, model)
    parts = Parts(config, accelerator, model, network, optimizer, scheduler, loader, sampler, windows, val_video, precision, resident is not None)
    if parts.batches_in_epoch(0) == 0:
        raise UserError(
            f"{len(windows)} training windows are too few for --batch_size {config.train.batch_size} on {accelerator.num_processes} process(es)"
        )
    return parts


def load_videos(config: Config, accelerator: Accelerator) -> tuple[Video, Video]:
    """The training and validation videos; the main process makes the synthetic dataset if it is needed."""
    data, main = config.data, accelerator.is_main_process
    with accelerator.main_process_first():
        dataset = CourseDataset(dataset_root(data, progress=main), data.frame_H, data.frame_W, progress=main)
        # Before any frame is read, so that a length the videos cannot give fails at once.
        check_train_length(data, *dataset.frame_count("train"))
        # Validation PSNRs are compared across runs, so a shorter rollout than asked is an error, not a note.
        val_length(data.val_vi_len, *dataset.frame_count("val"), shorter_ok=False)
        return dataset.train(), dataset.val()


def windows_in_epoch(data: DataConfig, windows: int, frames: int) -> Callable[[int], int]:
    """Windows used in each epoch: all of them, or while fast-training those in the first --fast_partial of the video."""
    fast = max(1, int(frames * data.fast_partial) // data.train_vi_len)
    return lambda epoch: min(fast, windows) if data.fast_train and epoch < data.fast_train_epoch else windows


# --data_on_device auto keeps the windows on a GPU when they take at most this share of its free memory.
RESIDENT_SHARE_OF_FREE = 1 / 8


def resident_windows(data: DataConfig, windows: IndexedWindows, device: torch.device) -> ResidentWindows | None:
    """The windows placed on `device` if --data_on_device asks for it, or if 'auto' and they fit on a GPU; else None."""
    if data.data_on_device == "off":
        return None
    needed = ResidentWindows.bytes_needed(windows)
    if data.data_on_device == "auto":
        if device.type != "cuda" or needed > torch.cuda.mem_get_info(device)[0] * RESIDENT_SHARE_OF_FREE:
            return None
    try:
        return ResidentWindows(windows, device)
    except torch.OutOfMemoryError:
        free = torch.cuda.mem_get_info(device)[0]
        raise UserError(
            f"--data_on_device on: the training windows take {needed / 2**20:.0f} MiB and {device} has {free / 2**20:.0f} MiB free; "
            "use --data_on_device auto (or off), or a smaller --partial"
        ) from None


def training_loader(config: Config, windows: IndexedWindows, sampler: WindowSampler, resident: ResidentWindows | None) -> DataLoader:
    """Batches of windows in the sampler's order: gathered on the device from `resident` windows, or else
    read by loader workers (which leave stop signals to training) into pinned memory on CUDA."""
    batching = {"batch_size": config.train.batch_size, "sampler": sampler, "drop_last": True}
    if resident is not None:
        return DataLoader(range(len(windows)), collate_fn=resident.collate, **batching)
    workers = config.data.num_workers
    return DataLoader(
        windows,
        num_workers=workers,
        collate_fn=collate_windows,
        worker_init_fn=ignore_stop_signals,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        **batching,
    )


def make_model(config: Config, accelerator: Accelerator) -> CVAE:
    """A fresh network, or the --ckpt_path weights, laid out and compiled as asked."""
    train = config.train
    model = CVAE(config.model)
    if train.ckpt_path is not None:
        ckpt.load_weights_into(model, ckpt.find_weights(train.ckpt_path, "--ckpt_path").file)
    # DeepSpeed views every parameter as flat bytes, which channels-last weights are not.
    if train.channels_last and not uses_deepspeed(accelerator):
        model = model.to(memory_format=torch.channels_last)
    if not train.compile:
        return model
    if train.compile_scope == "whole" and train.recompute_activations and accelerator.mixed_precision != "no":
        # The autocast is traced inside the compiled rollout, but a frame's recomputation in the
        # backward pass runs outside it, so the recomputation differs and autograd refuses it.
        raise UserError(
            f"--compile with {config.flag('recompute_activations')} under --mixed_precision {accelerator.mixed_precision} needs "
            "--compile_scope region (a rollout compiled whole cannot recompute autocast regions), or --mixed_precision no"
        )
    # In place, rather than through Accelerate's dynamo plugin, whose OptimizedModule wrapper
    # would prefix every key that `save_model` writes with `_orig_mod.`.
    options = {"backend": train.compile_backend, "mode": train.compile_mode}
    try:
        if train.compile_scope == "whole":
            model.compile(fullgraph=True, **options)
        else:
            model.compile_training_calls(**options)
    except torch._dynamo.exc.InvalidBackend:
        raise UserError(f"--compile_backend {train.compile_backend}: not a torch.compile backend here (see torch._dynamo.list_backends())") from None
    return model


# The param_group entries that say how a torch optimizer computes its step, not what it computes.
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
Flavour = Literal["fused", "foreach"]


def make_optimizer(model: torch.nn.Module, train: TrainConfig, device: torch.device, flavour: Flavour | None = None) -> torch.optim.Optimizer:
    """--optim at --lr, computed the `flavour` way (unset: the device's fastest), which loading a saved state keeps."""
    optimizer_class = torch.optim.AdamW if train.optim == "AdamW" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=train.lr, **{flavour or fastest_flavour(device): True})
    optimizer.register_load_state_dict_pre_hook(keep_implementation)
    return optimizer


def fastest_flavour(device: torch.device) -> Flavour:
    """Adam's fastest implementation on the device: one fused kernel where torch has one (CUDA, CPU,
    MPS, ...), batched (foreach) ops elsewhere. On 2 CPU cores the fused step takes a third of the
    foreach one's time (lab preset: 1.7 against 5.3-6.5 ms), and it can skip a non-finite step itself."""
    return "fused" if device.type in _get_fused_kernels_supported_devices() else "foreach"


def keep_implementation(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """The saved state with `optimizer`'s implementation flags in place of the saved ones.

    torch's load_state_dict copies the saved param groups whole, so a state saved on a CPU (foreach)
    would make a GPU run's optimizer foreach, and one saved on a GPU (fused) a CPU run's fused.
    Before the load rather than after, because the load places each `step` count by these flags:
    fused needs them on the parameter's device, foreach keeps them where they were loaded (the CPU)."""
    own = [{flag: group[flag] for flag in IMPLEMENTATION_FLAGS if flag in group} for group in optimizer.param_groups]
    # zip stops at the shorter: torch's load reports a different number of groups itself.
    state_dict["param_groups"] = [{**saved, **flags} for saved, flags in zip(state_dict["param_groups"], own, strict=False)]
    return state_dict

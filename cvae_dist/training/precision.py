"""Devices and number formats: the run's Accelerator, DeepSpeed's fixes, and the one autocast.

Accelerate autocasts a prepared model's forward for its own mixed precision, but nothing outside
it (BatchNorm recalibration, validation, the final evaluation of a fresh model), and DeepSpeed's
16-bit engine autocasts nothing at all. `Precision.autocast` is the one context that every
forward pass of a run computes in.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedType,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    parse_choice_from_env,
    parse_flag_from_env,
)

from cvae_dist.config import Config, TrainConfig
from cvae_dist.errors import UserError
from cvae_dist.tracking import trackers

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Compute capability from which NVIDIA GPUs run bf16 on their tensor cores (Ampere); older cards,
# RTX 20xx (7.5) and V100 (7.0) among them, emulate it slowly, though is_bf16_supported() says True.
NATIVE_BF16 = (8, 0)


def make_accelerator(config: Config) -> Accelerator:
    """The run's Accelerator: the --device asked for (unset: whatever is there), gloo where there is no GPU, DeepSpeed's config fixed for this run."""
    train = config.train
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    check_course_device_flags(train, processes)
    logging_dir = train.logging_dir or train.save_root
    # Before anything runs, so that a tracker that is not installed ends the command at once.
    log_with = trackers(train.report_to, Path(train.save_root), Path(logging_dir))
    on_cpu = train.device == "cpu" or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # Several CPU processes (tests, laptops) talk over gloo, and so does DeepSpeed without a GPU
    # (it would otherwise ask for NCCL or oneCCL).
    gloo = on_cpu and (deepspeed or processes > 1)
    mixed_precision, precision_note = mixed_precision_of(train, on_cpu)
    accelerator = Accelerator(
        # cpu=True silently turns DeepSpeed off; without it Accelerate still lands on the CPU.
        cpu=on_cpu and not deepspeed,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=train.save_root, logging_dir=logging_dir),
        # The course steps its MultiStepLR once per epoch, not once per optimizer step.
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if gloo else [],
        # Batches come from pinned memory (on CUDA), so their copy to the device need not wait.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )
    if train.device is not None and accelerator.device.type != train.device:
        raise UserError(
            f"--device {train.device}: the launcher put this process on {accelerator.device.type} "
            "(`accelerate launch --cpu` or use_cpu in its config forces the CPU; DeepSpeed takes a GPU wherever one is visible)"
        )
    if precision_note and accelerator.is_main_process:
        print(precision_note, file=sys.stderr, flush=True)
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.is_main_process:
        print(
            "warning: --mixed_precision fp16 does nothing on a CPU (Accelerate trains in fp32 there); use bf16 for mixed precision on a CPU",
            file=sys.stderr,
            flush=True,
        )
    if uses_deepspeed(accelerator):
        _fix_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, config)
    set_fast_math(train.tf32, accelerator.device.type)
    return accelerator


def mixed_precision_of(train: TrainConfig, on_cpu: bool) -> tuple[str | None, str | None]:
    """choose_mixed_precision for this run on this machine: its --mixed_precision, the launcher's, the device's."""
    device_type = planned_device_type(on_cpu)
    capability = cuda_capability() if device_type == "cuda" else None
    cpu_bf16 = device_type == "cpu" and cpu_has_bf16()
    launched = parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
    return choose_mixed_precision(train.mixed_precision, launched, device_type, capability, cpu_bf16)


def planned_device_type(on_cpu: bool) -> str:
    """The type of the device the Accelerator will put this process on, known before it is built."""
    if on_cpu or parse_flag_from_env("ACCELERATE_USE_CPU"):  # `accelerate launch --cpu` sets it
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "mps"


def cuda_capability() -> tuple[int, int]:
    """The compute capability of the first visible GPU: the same for every process of a machine, so that they autocast alike."""
    return torch.cuda.get_device_capability()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where oneDNN's bf16 convolutions outrun fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def choose_mixed_precision(
    asked: str | None, launched: str, device_type: str, capability: tuple[int, int] | None, cpu_bf16: bool = False
) -> tuple[str | None, str | None]:
    """The mixed precision to give the Accelerator (None: the launcher's, which Accelerate reads) and a line to print about it.

    `asked`: --mixed_precision; `launched`: what `accelerate launch` or its config file says; `capability`:
    the GPU's compute capability (None off CUDA); `cpu_bf16`: whether the CPU computes bf16 in hardware.
    'auto' and the launcher's bf16 become fp16 on a GPU that emulates bf16; a bf16 asked of the
    training script itself is kept, with a warning."""
    if asked == "auto":
        return auto_precision(device_type, capability, cpu_bf16)
    if capability is None or capability >= NATIVE_BF16:
        return asked, None
    if asked is None and launched == "bf16":
        return (
            "fp16",
            f"note: mixed precision fp16, not the launcher's bf16: {_emulates_bf16(capability)}; --mixed_precision bf16 on the training script keeps bf16",
        )
    if asked == "bf16":
        return (
            "bf16",
            f"warning: --mixed_precision bf16 runs slowly here: {_emulates_bf16(capability)}; --mixed_precision fp16 (or auto) uses its tensor cores",
        )
    return asked, None


def auto_precision(device_type: str, capability: tuple[int, int] | None, cpu_bf16: bool) -> tuple[str, str]:
    """--mixed_precision auto: bf16 where the hardware computes it, fp16 on a GPU that does not, fp32 elsewhere; and why."""
    if device_type == "cuda" and capability < NATIVE_BF16:
        return "fp16", f"note: mixed precision fp16 (--mixed_precision auto): {_emulates_bf16(capability)}"
    if device_type == "cuda":
        why = f"compute capability {_dotted(capability)} runs bf16 on its tensor cores, with no loss scaling"
        return "bf16", f"note: mixed precision bf16 (--mixed_precision auto): {why}"
    if device_type == "cpu" and cpu_bf16:
        return "bf16", "note: mixed precision bf16 (--mixed_precision auto): this CPU computes bf16 in hardware (AVX512-BF16 or AMX)"
    # Without bf16 hardware the CPU emulates it (Accelerate's fp16 does nothing on a CPU), and the
    # conversions cost more than this small network's arithmetic saves.
    device = "CPU" if device_type == "cpu" else f"{device_type.upper()} device"
    return "no", f"note: mixed precision no (--mixed_precision auto): this {device} has no bf16 arithmetic, so autocast would only add conversions"


def _emulates_bf16(capability: tuple[int, int]) -> str:
    return f"bf16 needs compute capability {_dotted(NATIVE_BF16)} (Ampere) and this GPU has {_dotted(capability)}, which emulates it"


def _dotted(capability: tuple[int, int]) -> str:
    return ".".join(map(str, capability))


def set_fast_math(tf32: bool, device_type: str) -> None:
    """TF32 on or off for float32 matmuls and cuDNN convolutions (a no-op on a CPU), and cuDNN's autotuner on CUDA."""
    # The legacy flags, not torch 2.9's fp32_precision: Accelerate and inductor still use the legacy
    # ones, and torch 2.13 raises at a read of them after a write of the new ones. torch 2.9 warns
    # once, at their first use, that they will be deprecated.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Please use the new API settings to control TF32")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if device_type == "cuda":
        # Every step has the same shapes, so the fastest kernel cuDNN finds for each is found once.
        torch.backends.cudnn.benchmark = True


def fast_math_note(device_type: str, tf32: bool) -> str:
    """', TF32 on, cuDNN benchmark on' for the run's header on CUDA; nothing elsewhere, where they do nothing."""
    if device_type != "cuda":
        return ""
    return f", TF32 {'on' if tf32 else 'off'}, cuDNN benchmark {'on' if torch.backends.cudnn.benchmark else 'off'}"


def check_course_device_flags(train: TrainConfig, processes: int) -> None:
    """The course's --device cuda needs a GPU, and its --gpu count must be the `processes` the launcher started."""
    if train.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible here; use --device cpu, or leave --device out to use whatever device there is")
    if train.gpu is not None and train.gpu != processes:
        raise UserError(
            f"--gpu {train.gpu}: this run has {processes} process(es); each process drives one GPU and the launcher starts them: "
            "`accelerate launch --num_processes N` trains on N GPUs, and CUDA_VISIBLE_DEVICES picks which"
        )


def _fix_deepspeed_config(deepspeed_config: dict, config: Config) -> None:
    # DeepSpeed clips gradients itself; its config's "auto" would become 1.0 whatever --max_grad_norm says.
    if deepspeed_config.get("gradient_clipping", "auto") == "auto":
        deepspeed_config["gradient_clipping"] = config.train.max_grad_norm
    # DeepSpeed casts parameters but not buffers to 16 bits, and BatchNorm then refuses 16-bit
    # weights with float32 running statistics.
    for half in HALF:
        if deepspeed_config.get(half, {}).get("enabled") is True:
            deepspeed_config.setdefault("data_types", {}).setdefault("buffer_dtype", half)


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


@dataclass(frozen=True)
class Precision:
    """The number format forward passes compute in."""

    device_type: str
    """The type of the device they run on ('cuda', 'cpu', 'mps')."""
    dtype: torch.dtype | None = None
    """The 16-bit type they autocast to; None computes in float32."""

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()


def precision_of(accelerator: Accelerator, model) -> Precision:
    """The run's precision: DeepSpeed's engine's 16-bit weights, or Accelerate's mixed precision where
    it autocasts (not fp16 on a CPU)."""
    if uses_deepspeed(accelerator):
        dtype = torch.bfloat16 if model.bfloat16_enabled() else torch.float16 if model.fp16_enabled() else None
    else:
        dtype = HALF.get(accelerator.mixed_precision) if accelerator.native_amp else None
    return Precision(accelerator.device.type, dtype)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_threads_note(threads: int, cores_per_process: int) -> str | None:
    """A note when torch would leave CPU cores idle, as it does under a plain `accelerate launch`.

    Without `--cpu` (or `use_cpu` in its config) `accelerate launch` sets OMP_NUM_THREADS=1, which
    makes CPU training use one core whatever the machine has."""
    if threads >= cores_per_process:
        return None
    return (
        f"note: torch uses {threads} CPU thread(s) per process on {cores_per_process} free core(s) per process; "
        f"`accelerate launch --num_cpu_threads_per_process {cores_per_process}` (or OMP_NUM_THREADS={cores_per_process}) uses them all"
    )


def device_note(accelerator: Accelerator) -> str | None:
    """The note on idle CPU cores, for a run on a CPU."""
    if accelerator.device.type != "cpu":
        return None
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    return cpu_threads_note(torch.get_num_threads(), usable_cores() // max(local_processes, 1))

"""The settings, in typed sections: each field's default, the values it may take and its one-line
docstring, the --help text. Adding a setting is adding its field here."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cvae_dist.config.option import Option, describe, setting
from cvae_dist.config.ranges import AT_LEAST_0, AT_LEAST_1, FRACTION, POSITIVE, SHARE, Range

# SSIM's 11x11 window (metrics.SSIM_WINDOW) must fit in a frame; a constant here keeps torch out of config.
MIN_FRAME_SIDE = 11
# exp(logvar) in the KL overflows float32 above 88.7, which would defeat the clamp.
MAX_LOGVAR = 88.0
# The latent noise is seeded with (seed << 40) ^ (epoch << 24) ^ window, which must fit in 64 bits.
MAX_SEED = 2**24 - 1


@dataclass
class ModelConfig:
    """The network's widths and the switches that reproduce the course code's defects."""

    # The layers split these channel counts into equal groups.
    F_dim: int = setting(128, allowed=Range(8, step=8))
    """Channels of the frame encoder's features (course --F_dim)."""
    L_dim: int = setting(32, allowed=Range(2, step=2))
    """Channels of the pose-label encoder's features (course --L_dim)."""
    N_dim: int = setting(12, allowed=Range(4, step=4))
    """Channels of the latent z at every pixel (course --N_dim)."""
    D_out_dim: int = setting(192, allowed=Range(8, step=8))
    """Channels of the decoder fusion's output fed to the generator (course --D_out_dim)."""
    course_leaky_relu: bool = False
    """Reproduce the course's nn.LeakyReLU(True), a slope of 1.0 (identity), in the label encoder and Gaussian predictor."""
    output_activation: Literal["sigmoid", "none"] = "sigmoid"
    """Squash the generator's output into [0,1]; 'none' reproduces the course's unbounded output."""
    zero_init_posterior: bool = True
    """Start the posterior head at mu = 0, logvar = 0 (a KL of 0) so the summed KL cannot swamp the reconstruction early on; off is the course's default init."""
    freeze_batchnorm: bool = False
    """Normalise pose features with running statistics while training, so results do not depend on how a batch is split."""
    logvar_clamp: bool = True
    """Clamp the posterior's log-variance to [--logvar_min, --logvar_max] so exp() cannot overflow (off is the course's unbounded head)."""
    logvar_min: float = setting(-30.0, allowed=Range())
    """Lower bound of the posterior's log-variance when --logvar_clamp is on (sigma >= 3e-7)."""
    logvar_max: float = setting(20.0, allowed=Range(high=MAX_LOGVAR))
    """Upper bound of the posterior's log-variance when --logvar_clamp is on (sigma <= 2.2e4, finite even in fp16)."""


PRESETS: dict[str, dict[str, int]] = {
    # The course's exact network: its checkpoints load into it with strict=True.
    "lab": {"F_dim": 128, "L_dim": 32, "N_dim": 12, "D_out_dim": 192},
    # About 38x fewer FLOPs per frame than `lab`, for CPU demos and tests.
    "tiny": {"F_dim": 16, "L_dim": 8, "N_dim": 4, "D_out_dim": 32},
}


@dataclass
class DataConfig:
    """Where the frames come from and how they are cut into windows."""

    DR: str | None = None
    """Dataset root in the course layout; unset uses the built-in synthetic set under data/synthetic (made on first use)."""
    partial: float = setting(1.0, allowed=SHARE, hparam="partial")
    """Fraction of the training video to use, from its start (course --partial)."""
    # Frame 0 is given, so a window or rollout needs a second frame to predict.
    train_vi_len: int = setting(16, allowed=Range(2))
    """Frames per training window; the video is cut into consecutive non-overlapping windows."""
    val_vi_len: int = setting(630, allowed=Range(2))
    """Frames of the validation video to roll out from its first frame."""
    frame_H: int = setting(32, allowed=Range(MIN_FRAME_SIDE))
    """Height frames are resized to (bilinear)."""
    frame_W: int = setting(64, allowed=Range(MIN_FRAME_SIDE))
    """Width frames are resized to (bilinear)."""
    num_workers: int = setting(4, allowed=AT_LEAST_0, bookkeeping=True)
    """Data-loader worker processes per training process (none are started while the data is on the device)."""
    data_on_device: Literal["auto", "on", "off"] = setting("auto", bookkeeping=True)
    """Keep the training windows on the training device as uint8 and gather each batch there by index, with no loader workers and no per-batch copy; 'auto' does so on a CUDA GPU when they take at most an eighth of its free memory (the lab set is 290 MB)."""
    fast_train: bool = False
    """Train on the first --fast_partial of the data for the first --fast_train_epoch epochs."""
    fast_partial: float = setting(0.4, allowed=SHARE)
    """Fraction of the training video used while fast training."""
    fast_train_epoch: int = setting(5, allowed=AT_LEAST_0)
    """Number of epochs that use --fast_partial when --fast_train is on (the course's code fast-trains 2 more: add 2 to match it)."""
    shuffle: bool = True
    """Shuffle the training windows every epoch (the course reads them in order)."""
    synthetic_train_frames: int = setting(6400, allowed=AT_LEAST_1)
    """Training frames of the synthetic dataset made when --DR is unset."""


@dataclass
class MethodConfig:
    """Teacher forcing and KL annealing."""

    tfr: float = setting(1.0, allowed=FRACTION, hparam="tfr")
    """Initial teacher-forcing ratio: the chance that a coin says 'feed the true previous frame'."""
    tfr_sde: int = setting(10, allowed=AT_LEAST_0, hparam="tfr_sde")
    """Epoch from which the teacher-forcing ratio decays."""
    tfr_d_step: float = setting(0.1, allowed=FRACTION, hparam="tfr_d_step")
    """Amount the teacher-forcing ratio drops each epoch from --tfr_sde on."""
    tfr_coin: Literal["epoch", "batch", "frame"] = setting("epoch", hparam="coin")
    """Draw the teacher-forcing coin once per epoch (course), once per optimizer step ('batch': one coin for all its accumulated batches, on every process), or once per frame of every window ('frame': scheduled sampling; every step then decodes frame by frame)."""
    kl_anneal_type: Literal["Cyclical", "Monotonic", "Without"] = setting("Cyclical", hparam="KL annealing")
    """KL weight schedule: Cyclical (Fu et al. 2019), Monotonic (one cycle) or Without (beta = 1)."""
    kl_anneal_cycle: int = setting(10, allowed=AT_LEAST_1, hparam="cycles")
    """Number of annealing cycles over the whole run (Cyclical)."""
    kl_anneal_ratio: float = setting(1.0, allowed=SHARE, hparam="ratio")
    """Fraction of each cycle over which beta rises linearly from 0 to 1 before holding at 1."""
    kl_anneal_unit: Literal["epoch", "step"] = setting("epoch", hparam="unit")
    """Advance beta once per epoch (course) or once per optimizer step (Fu et al.)."""
    kl_last_frame_only: bool = False
    """Reproduce a common student bug: weigh only the last frame's KL instead of summing over frames."""
    bn_recalibration_windows: int = setting(64, allowed=AT_LEAST_0)
    """Training windows whose pose labels re-estimate the BatchNorm statistics before each validation (0: keep the running averages, as the course does)."""


@dataclass
class TrainConfig:
    """Optimisation, checkpoints, logging and the run's folders."""

    preset: Literal["lab", "tiny"] = "lab"
    """Network widths: 'lab' is the course's exact model, 'tiny' a small one for CPUs."""
    save_root: str = setting("runs/default", bookkeeping=True)
    """Folder of this run: config, checkpoints, best weights, evaluation and (by default) TensorBoard logs."""
    batch_size: int = setting(2, allowed=AT_LEAST_1, hparam="batch")
    """Windows per batch on each process."""
    lr: float = setting(0.001, allowed=POSITIVE, hparam="lr")
    """Initial learning rate."""
    optim: Literal["Adam", "AdamW"] = "Adam"
    """Optimizer."""
    # A milestone at epoch 0 would lower the learning rate before the first step.
    lr_milestones: list[int] = setting(factory=lambda: [2, 5], allowed=AT_LEAST_1)
    """Epochs at which the learning rate is multiplied by --lr_gamma (course MultiStepLR)."""
    lr_gamma: float = setting(0.1, allowed=SHARE)
    """Factor applied to the learning rate at each milestone."""
    num_epoch: int = setting(70, allowed=AT_LEAST_1, hparam="epochs")
    """Number of epochs."""
    per_save: int = setting(3, allowed=AT_LEAST_1, bookkeeping=True)
    """Save a checkpoint every this many epochs."""
    ckpt_path: str | None = None
    """Start from these weights (a checkpoint folder or a model.safetensors file) instead of a fresh model."""
    test: bool = setting(False, bookkeeping=True)
    """Evaluate instead of training, as the course's --test does: roll out the validation video with the --ckpt_path weights (unset: those of the run in --save_root, its best or else its newest checkpoint's) and write its CSV, plot and GIF to --save_root's eval/, as `python -m cvae_dist.evaluate` does."""
    device: Literal["cuda", "cpu"] | None = setting(None, bookkeeping=True)
    """Train on a CUDA GPU (an error if none is visible) or on the CPU even where there is a GPU (Accelerate's cpu=True); unset uses whatever device is there (the course's default is cuda)."""
    # 0 too, so that a course user who means GPU 0 gets the error that says how GPUs are chosen here.
    gpu: int | None = setting(None, allowed=AT_LEAST_0, bookkeeping=True)
    """The course's GPU count, which its code never reads: here each process trains on one GPU and the launcher starts them (`accelerate launch --num_processes N`; CUDA_VISIBLE_DEVICES picks which GPUs), so a --gpu other than the number of processes is an error."""
    seed: int = setting(0, allowed=Range(0, MAX_SEED))
    """Seed of the weights, the latent noise, the shuffling and the teacher-forcing coins."""
    gradient_accumulation_steps: int = setting(1, allowed=AT_LEAST_1)
    """Batches whose gradients are summed before each optimizer step."""
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] | None = None
    """Autocast precision; 'auto' picks bf16 where the hardware computes it (GPUs of compute capability 8.0+, CPUs with AVX512-BF16 or AMX), fp16 on older GPUs (which emulate bf16) and no (fp32) elsewhere; unset takes what `accelerate launch` or its config file says, but its bf16 becomes fp16 on a GPU older than Ampere (8.0)."""
    tf32: bool = True
    """Let float32 matrix multiplications and cuDNN convolutions use TF32 tensor cores on GPUs of compute capability 8.0+ (Ampere on): several times faster, 10 mantissa bits; no effect on a CPU."""
    max_grad_norm: float = setting(1.0, allowed=AT_LEAST_0)
    """Clip the gradient norm to this before each optimizer step (0 turns clipping off)."""
    use_ema: bool = setting(False, hparam="EMA")
    """Keep an exponential moving average of the weights (float32) and validate it, keep it as best/, evaluate and export it instead of the raw weights; checkpoints carry it as ema.safetensors."""
    ema_decay: float = setting(0.999, allowed=Range(0, 1, low_excluded=True), hparam="EMA decay")
    """Largest share of the average kept at each optimizer step; --ema_warmup_power starts it lower."""
    ema_warmup_power: float = setting(2 / 3, allowed=FRACTION, hparam="EMA warm-up")
    """Warm-up of the average's decay, as diffusers' EMAModel: after t updates it is min(--ema_decay, 1 - (1 + t)^-power) (2/3 reaches 0.999 after 31.6k steps, 3/4 after 10k); 0 holds it at --ema_decay from the start."""
    checkpointing_steps: int | None = setting(None, allowed=AT_LEAST_1, bookkeeping=True)
    """Also save a checkpoint every this many optimizer steps (mid-epoch)."""
    checkpoints_total_limit: int | None = setting(None, allowed=AT_LEAST_1, bookkeeping=True)
    """Keep at most this many step/epoch checkpoints (the best weights are always kept)."""
    resume_from_checkpoint: str | None = setting(None, bookkeeping=True)
    """Resume the whole training state from a checkpoint folder, or 'latest' (newest intact) in --save_root."""
    overwrite: bool = setting(False, bookkeeping=True)
    """Replace the run already in --save_root (its config, checkpoints, best weights, evaluation and logs) instead of refusing."""
    skip_nonfinite: bool = True
    """Skip optimizer steps whose loss or gradient is not finite: with a fused optimizer (the default) the optimizer skips on the device and the host reads the verdicts at log points and checkpoints; otherwise one host-device sync per optimizer step."""
    max_nonfinite_steps: int = setting(20, allowed=AT_LEAST_1)
    """Stop with an error after this many skipped (non-finite) optimizer steps in a row."""
    logging_dir: str | None = setting(None, bookkeeping=True)
    """Folder for TensorBoard events; unset puts them in --save_root."""
    report_to: Literal["tensorboard", "wandb", "mlflow", "all"] = setting("tensorboard", bookkeeping=True)
    """Also log to wandb, MLflow or both ('all'; each an extra: pip install -e '.[wandb]'); TensorBoard events are always written, and a resumed run continues its wandb/MLflow run (ids in --save_root's trackers.json)."""
    channels_last: bool = True
    """Keep activations channels-last, the layout CPU (oneDNN) and GPU (cuDNN) convolutions run fastest in."""
    compile: bool = False
    """Compile the training rollout with torch.compile (see --compile_scope); the first steps of each teacher-forcing mode wait for the compiler."""
    compile_backend: str = "inductor"
    """torch.compile backend used by --compile: 'inductor' generates kernels; 'eager' or 'aot_eager' only trace (quick checks that compiling works)."""
    compile_scope: Literal["whole", "region"] = "whole"
    """What --compile compiles: 'whole', the window's rollout as one graph (the fewest kernels: without teacher forcing 0.68x eager's on a CPU, but unrolled over the window, so the compile grows with it: 230 s for the lab preset's 16 frames on 2 cores); 'region', each call the rollout makes to the network on its own, so the autoregressive step compiles once whatever the window (82 s there) and recomputation works under autocast, at 0.93x eager's kernels (each call's weight gradients are summed outside the graphs)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """Inductor's mode under --compile: 'reduce-overhead' replays each compiled pass as a CUDA graph (one launch for its thousands of kernels, the step's shapes fixed; nothing changes on a CPU); 'max-autotune' also times several kernels for each convolution and matrix product (a longer compile) and uses CUDA graphs."""
    recompute_activations: bool = setting(False, formerly="activation_checkpointing")
    """Recompute each frame's activations in the backward pass instead of keeping them: far less memory for long windows, about a third more compute."""
    eval_every: int = setting(1, allowed=AT_LEAST_1)
    """Roll out the validation video every this many epochs (and after the last)."""
    store_visualization: bool = setting(False, bookkeeping=True)
    """Also write each validation's rollout as a GIF (prediction | truth | pose), eval/rollout-epoch-<E>.gif, to watch the result while training (course --store_visualization)."""
    log_every: int = setting(10, allowed=AT_LEAST_1, bookkeeping=True)
    """Log training scalars every this many optimizer steps."""
    profile_steps: int = setting(0, allowed=AT_LEAST_0, bookkeeping=True)
    """Profile this many optimizer steps with torch.profiler (0: off): a Perfetto/Chrome trace and the top operators' table in --save_root's profile/, on the main process only."""
    profile_wait: int = setting(5, allowed=AT_LEAST_0, bookkeeping=True)
    """Optimizer steps run before profiling (then one warm-up step the profiler discards), so that start-up costs stay out of the trace."""
    debug: bool = setting(False, bookkeeping=True)
    """Show full tracebacks instead of one-line errors."""


SECTIONS = {"model": ModelConfig, "data": DataConfig, "method": MethodConfig, "train": TrainConfig}


@dataclass
class Config:
    """All settings of a training run, in four sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """The frames and their windows."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """Teacher forcing and KL annealing."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, checkpoints, logging and folders."""
    given_as: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    """Settings the user gave under a former name: name -> that former name, so that messages use the user's words."""

    def flat(self) -> dict[str, Any]:
        """Every setting under its flag name, as written to config.yaml and logged as hparams."""
        return {k: v for section in SECTIONS for k, v in dataclasses.asdict(getattr(self, section)).items()}

    def digest(self, *, results_only: bool = False) -> str:
        """A short hash of the settings, to tell runs apart; `results_only` leaves out the bookkeeping ones.

        A renamed setting is hashed under its former name, so that runs from before the rename keep their hash."""
        table = options()
        settings = {table[k].formerly or k: v for k, v in self.flat().items() if not (results_only and table[k].bookkeeping)}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def debug(self) -> bool:
        """--debug, which errors.run_command reads as it reads every command's (also when set in a YAML file)."""
        return self.train.debug

    def flag(self, name: str) -> str:
        """How a message names a setting: `--lr`, or `--activation_checkpointing` where the user gave it by that former name."""
        return f"--{self.given_as.get(name, name)}"


@functools.cache
def options() -> dict[str, Option]:
    """Every flag name -> its Option, across the four sections."""
    return describe(SECTIONS)


def current_name(name: str) -> str:
    """The name of a setting given by its name or its former name (an unknown name comes back as it is)."""
    return next((option.name for option in options().values() if option.formerly == name), name)


def hparam_labels() -> dict[str, str]:
    """The hyperparameters the course's comparisons vary -> their short names, in settings order."""
    return {name: option.hparam for name, option in options().items() if option.hparam}


def is_bookkeeping(name: str) -> bool:
    """Whether a setting (by any of its names; unknown: no) only says where a run writes and how often."""
    option = options().get(current_name(name))
    return option is not None and option.bookkeeping

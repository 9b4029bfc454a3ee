"""Typed configuration: every course flag under its course name and default, plus ours.

A run's settings resolve in this order, later winning: field defaults, the chosen
`preset`'s widths, a YAML file (`--config`), then command-line flags. The YAML file and
the command line use the same flat names, so a sweep point is just a list of flags.
`validate` is the one place that says which values each setting may take.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cvae_dist.errors import ArgumentParser, UserError


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    bookkeeping: bool = False,
    hparam: str | None = None,
    formerly: str | None = None,
) -> Any:
    """A settings field with what the rest of the package needs to know about it (see `Option`)."""
    facts = {"bookkeeping": bookkeeping, "hparam": hparam, "formerly": formerly}
    return field(default=default, default_factory=factory, metadata=facts)


@dataclass
class ModelConfig:
    """The network's widths and the switches that reproduce the course code's defects."""

    F_dim: int = 128
    """Channels of the frame encoder's features (course --F_dim)."""
    L_dim: int = 32
    """Channels of the pose-label encoder's features (course --L_dim)."""
    N_dim: int = 12
    """Channels of the latent z at every pixel (course --N_dim)."""
    D_out_dim: int = 192
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
    logvar_min: float = -30.0
    """Lower bound of the posterior's log-variance when --logvar_clamp is on (sigma >= 3e-7)."""
    logvar_max: float = 20.0
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
    partial: float = setting(1.0, hparam="partial")
    """Fraction of the training video to use, from its start (course --partial)."""
    train_vi_len: int = 16
    """Frames per training window; the video is cut into consecutive non-overlapping windows."""
    val_vi_len: int = 630
    """Frames of the validation video to roll out from its first frame."""
    frame_H: int = 32
    """Height frames are resized to (bilinear)."""
    frame_W: int = 64
    """Width frames are resized to (bilinear)."""
    num_workers: int = setting(4, bookkeeping=True)
    """Data-loader worker processes per training process."""
    fast_train: bool = False
    """Train on the first --fast_partial of the data for the first --fast_train_epoch epochs."""
    fast_partial: float = 0.4
    """Fraction of the training video used while fast training."""
    fast_train_epoch: int = 5
    """Number of epochs that use --fast_partial when --fast_train is on (the course's code fast-trains 2 more: add 2 to match it)."""
    shuffle: bool = True
    """Shuffle the training windows every epoch (the course reads them in order)."""
    synthetic_train_frames: int = 6400
    """Training frames of the synthetic dataset made when --DR is unset."""


@dataclass
class MethodConfig:
    """Teacher forcing and KL annealing."""

    tfr: float = setting(1.0, hparam="tfr")
    """Initial teacher-forcing ratio: the chance that a coin says 'feed the true previous frame'."""
    tfr_sde: int = setting(10, hparam="tfr_sde")
    """Epoch from which the teacher-forcing ratio decays."""
    tfr_d_step: float = setting(0.1, hparam="tfr_d_step")
    """Amount the teacher-forcing ratio drops each epoch from --tfr_sde on."""
    tfr_coin: Literal["epoch", "batch", "frame"] = setting("epoch", hparam="coin")
    """Draw the teacher-forcing coin once per epoch (course), once per optimizer step ('batch': one coin for all its accumulated batches, on every process), or once per frame of every window ('frame': scheduled sampling; every step then decodes frame by frame)."""
    kl_anneal_type: Literal["Cyclical", "Monotonic", "Without"] = setting("Cyclical", hparam="KL annealing")
    """KL weight schedule: Cyclical (Fu et al. 2019), Monotonic (one cycle) or Without (beta = 1)."""
    kl_anneal_cycle: int = setting(10, hparam="cycles")
    """Number of annealing cycles over the whole run (Cyclical)."""
    kl_anneal_ratio: float = setting(1.0, hparam="ratio")
    """Fraction of each cycle over which beta rises linearly from 0 to 1 before holding at 1."""
    kl_anneal_unit: Literal["epoch", "step"] = setting("epoch", hparam="unit")
    """Advance beta once per epoch (course) or once per optimizer step (Fu et al.)."""
    kl_last_frame_only: bool = False
    """Reproduce a common student bug: weigh only the last frame's KL instead of summing over frames."""
    bn_recalibration_windows: int = 64
    """Training windows whose pose labels re-estimate the BatchNorm statistics before each validation (0: keep the running averages, as the course does)."""


@dataclass
class TrainConfig:
    """Optimisation, checkpoints, logging and the run's folders."""

    preset: Literal["lab", "tiny"] = "lab"
    """Network widths: 'lab' is the course's exact model, 'tiny' a small one for CPUs."""
    save_root: str = setting("runs/default", bookkeeping=True)
    """Folder of this run: config, checkpoints, best weights, evaluation and (by default) TensorBoard logs."""
    batch_size: int = setting(2, hparam="batch")
    """Windows per batch on each process."""
    lr: float = setting(0.001, hparam="lr")
    """Initial learning rate."""
    optim: Literal["Adam", "AdamW"] = "Adam"
    """Optimizer."""
    lr_milestones: list[int] = field(default_factory=lambda: [2, 5])
    """Epochs at which the learning rate is multiplied by --lr_gamma (course MultiStepLR)."""
    lr_gamma: float = 0.1
    """Factor applied to the learning rate at each milestone."""
    num_epoch: int = setting(70, hparam="epochs")
    """Number of epochs."""
    per_save: int = setting(3, bookkeeping=True)
    """Save a checkpoint every this many epochs."""
    ckpt_path: str | None = None
    """Start from these weights (a checkpoint folder or a model.safetensors file) instead of a fresh model."""
    test: bool = setting(False, bookkeeping=True)
    """Evaluate instead of training, as the course's --test does: roll out the validation video with the --ckpt_path weights (unset: those of the run in --save_root, its best or else its newest checkpoint's) and write its CSV, plot and GIF to --save_root's eval/, as `python -m cvae_dist.evaluate` does."""
    device: Literal["cuda", "cpu"] | None = setting(None, bookkeeping=True)
    """Train on a CUDA GPU (an error if none is visible) or on the CPU even where there is a GPU (Accelerate's cpu=True); unset uses whatever device is there (the course's default is cuda)."""
    gpu: int | None = setting(None, bookkeeping=True)
    """The course's GPU count, which its code never reads: here each process trains on one GPU and the launcher starts them (`accelerate launch --num_processes N`; CUDA_VISIBLE_DEVICES picks which GPUs), so a --gpu other than the number of processes is an error."""
    seed: int = 0
    """Seed of the weights, the latent noise, the shuffling and the teacher-forcing coins."""
    gradient_accumulation_steps: int = 1
    """Batches whose gradients are summed before each optimizer step."""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """Autocast precision; unset takes what `accelerate launch` or its config file says."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this before each optimizer step (0 turns clipping off)."""
    checkpointing_steps: int | None = setting(None, bookkeeping=True)
    """Also save a checkpoint every this many optimizer steps (mid-epoch)."""
    checkpoints_total_limit: int | None = setting(None, bookkeeping=True)
    """Keep at most this many step/epoch checkpoints (the best weights are always kept)."""
    resume_from_checkpoint: str | None = setting(None, bookkeeping=True)
    """Resume the whole training state from a checkpoint folder, or 'latest' (newest intact) in --save_root."""
    overwrite: bool = setting(False, bookkeeping=True)
    """Replace the run already in --save_root (its config, checkpoints, best weights, evaluation and logs) instead of refusing."""
    skip_nonfinite: bool = True
    """Skip optimizer steps whose loss or gradient is not finite (costs one host-device sync per optimizer step)."""
    max_nonfinite_steps: int = 20
    """Stop with an error after this many skipped (non-finite) optimizer steps in a row."""
    logging_dir: str | None = setting(None, bookkeeping=True)
    """Folder for TensorBoard events; unset puts them in --save_root."""
    channels_last: bool = True
    """Keep activations channels-last, the layout CPU (oneDNN) and GPU (cuDNN) convolutions run fastest in."""
    compile: bool = False
    """Compile the training rollout with torch.compile (inductor); the first steps of each teacher-forcing mode wait for the compiler."""
    compile_backend: str = "inductor"
    """torch.compile backend used by --compile: 'inductor' generates kernels; 'eager' or 'aot_eager' only trace (quick checks that compiling works)."""
    recompute_activations: bool = setting(False, formerly="activation_checkpointing")
    """Recompute each frame's activations in the backward pass instead of keeping them: far less memory for long windows, about a third more compute."""
    eval_every: int = 1
    """Roll out the validation video every this many epochs (and after the last)."""
    store_visualization: bool = setting(False, bookkeeping=True)
    """Also write each validation's rollout as a GIF (prediction | truth | pose), eval/rollout-epoch-<E>.gif, to watch the result while training (course --store_visualization)."""
    log_every: int = setting(10, bookkeeping=True)
    """Log training scalars every this many optimizer steps."""
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


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a dataclass, used as its --help text."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


@dataclass(frozen=True)
class Option:
    """One flag: its section, type, documentation and what the package needs to know about it."""

    name: str
    """The flag's name (without --), as in YAML files and config.yaml."""
    section: str
    """The Config section it belongs to."""
    type: Any
    """Its annotated type."""
    default: Any
    """Its default value."""
    help: str
    """Its one-line docstring, the --help text."""
    bookkeeping: bool = False
    """It says where a run runs and writes, and how often, not what it computes: changing it does not make another run."""
    hparam: str | None = None
    """A hyperparameter the course's comparisons vary, shown under this short name in the report's table."""
    formerly: str | None = None
    """The name it had before a rename, still accepted in flags, YAML and saved config.yaml files."""

    @property
    def base_type(self) -> Any:
        if typing.get_origin(self.type) in (typing.Union, types.UnionType):
            return next(a for a in typing.get_args(self.type) if a is not type(None))
        return self.type

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def choices(self) -> tuple | None:
        return typing.get_args(self.base_type) if typing.get_origin(self.base_type) is Literal else None

    def coerce(self, value: Any, source: str) -> Any:
        """Check and convert a value from YAML or the command line; `source` names where it came from."""
        label = setting_label(self.name, source)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and self.optional):
            if self.optional:
                return None
            raise UserError(f"{label} may not be empty")
        base = self.base_type
        try:
            if self.choices is not None:
                if value not in self.choices:
                    raise UserError(f"{label} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
                return value
            if base is bool:
                return _as_bool(value)
            if typing.get_origin(base) is list:
                items = value if isinstance(value, list) else [v for v in str(value).replace(",", " ").split() if v]
                (item_type,) = typing.get_args(base)
                return [_as_scalar(item_type, v) for v in items]
            return _as_scalar(base, value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int too big for a float
            raise UserError(f"{label} must be {_type_name(self.type)}, got {value!r}") from None


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _as_scalar(kind: type, value: Any) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise TypeError(value)  # YAML's `true` is not a number or a path
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value) if not isinstance(value, str) else int(value, 10)
    if kind is float:
        return float(value)
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise TypeError(value)
        return str(value)
    raise TypeError(kind)


def _type_name(kind: Any) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")


@functools.cache
def options() -> dict[str, Option]:
    """Every flag name -> its Option, across the four sections."""
    table = {}
    for section, cls in SECTIONS.items():
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            table[f.name] = Option(f.name, section, hints[f.name], default, docs.get(f.name, ""), **f.metadata)
    return table


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


def build_parser(prog: str = "cvae_dist/train.py") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description=(
            "Train the course's conditional VAE for video prediction with Hugging Face Accelerate. "
            "Run with no arguments for the demo (synthetic data, tiny preset, whatever device is there). "
            "Settings resolve as: defaults < --preset widths < --config YAML < flags."
        ),
        argument_default=argparse.SUPPRESS,  # only flags the user typed override the YAML file
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of flag: value settings")
    groups = {name: parser.add_argument_group(f"{name} settings", cls.__doc__) for name, cls in SECTIONS.items()}
    for opt in options().values():
        kwargs: dict[str, Any] = {"help": f"{opt.help} (default: {opt.default})".replace("%", "%%")}
        if opt.base_type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(opt.base_type) is list:
            kwargs["nargs"] = "*"
            kwargs["metavar"] = "N"
        else:
            kwargs["metavar"] = "{" + ",".join(opt.choices) + "}" if opt.choices else opt.name.upper()
        groups[opt.section].add_argument(f"--{opt.name}", **kwargs)
        if opt.formerly:  # its own destination, so that messages can name the flag as the user typed it
            groups[opt.section].add_argument(f"--{opt.formerly}", **{**kwargs, "help": f"the former name of --{opt.name}"})
    return parser


def read_yaml(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """A YAML file holding a mapping; errors name it as `label` (default: the --config flag)."""
    label = label or f"--config {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except OSError as err:  # a folder, no permission, a name too long
        raise UserError(f"{label}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{label}: not a text file") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: a date such as 2024-13-45
        raise UserError(f"{label}: not valid YAML ({(str(err) or type(err).__name__).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping of flag: value, got {type(data).__name__}")
    return data


def resolve(explicit: dict[str, tuple[Any, str]]) -> Config:
    """Build and validate a Config from explicit settings, each given as name -> (value, where it came from)."""
    table = options()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    given_as: dict[str, str] = {}
    for given, (value, source) in explicit.items():
        name = current_name(given)
        if name not in table:
            raise UserError(f"{source}: unknown setting {str(name)!r}" + _did_you_mean(str(name), table))
        values[name], sources[name] = table[name].coerce(value, source), source
        if name != given:
            given_as[name] = given
    preset = values.get("preset", table["preset"].default)
    merged = {**PRESETS[preset], **values}
    sections = {section: cls(**{k: v for k, v in merged.items() if table[k].section == section}) for section, cls in SECTIONS.items()}
    config = Config(**sections, given_as=given_as)
    validate(config, sources)
    return config


def _did_you_mean(name: str, table: dict[str, Option]) -> str:
    import difflib

    close = difflib.get_close_matches(name, table, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_args(argv: list[str] | None = None, *, default_config: Path | None = None) -> Config:
    """Command line (and optional YAML) -> Config. With no arguments, `default_config` is used."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    if not argv and default_config is not None:
        config_file = default_config
    explicit: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        explicit.update({k: (v, f"--config {config_file}") for k, v in read_yaml(config_file).items()})
    explicit.update({k: (v, f"--{k}") for k, v in args.items()})
    return resolve(explicit)


def from_flat(settings: dict[str, Any], source: str) -> Config:
    """Rebuild a Config from a flat mapping such as a saved config.yaml."""
    return resolve({k: (v, source) for k, v in settings.items()})


def load_config_file(path: str | Path) -> Config:
    return from_flat(read_yaml(path), str(path))


def save_config_file(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.flat(), sort_keys=False))


# ---- validation: which values each setting may take ----------------------------------------------

# SSIM's 11x11 window (metrics.SSIM_WINDOW) must fit in a frame; a constant here keeps torch out of config.
MIN_FRAME_SIDE = 11
# exp(logvar) in the KL overflows float32 above 88.7, which would defeat the clamp.
MAX_LOGVAR = 88.0
# The latent noise is seeded with (seed << 40) ^ (epoch << 24) ^ window, which must fit in 64 bits.
MAX_SEED = 2**24 - 1


@dataclass(frozen=True)
class Range:
    """The numbers a setting may take: finite, from `low` to `high`, and multiples of `step`."""

    low: float = -math.inf
    """Smallest value allowed."""
    high: float = math.inf
    """Largest value allowed."""
    low_excluded: bool = False
    """Whether `low` itself is refused (a learning rate must be above 0, not at it)."""
    step: int = 1
    """Values must be multiples of this (channel counts that layers split evenly)."""

    def problem(self, value: float) -> str | None:
        """What is wrong with `value` ('must be ...'), or None."""
        if isinstance(value, float) and not math.isfinite(value):  # ints are finite, and may be too big for a float
            return f"must be a finite number {self}".rstrip()
        below = value < self.low or (self.low_excluded and value == self.low)
        return f"must be {self}" if below or value > self.high or (self.step > 1 and value % self.step) else None

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if math.isfinite(self.low) and math.isfinite(self.high):
            bounds = f"in {'(' if self.low_excluded else '['}{low}, {high}]"
        elif math.isfinite(self.low):
            bounds = f"{'>' if self.low_excluded else '>='} {low}"
        else:
            bounds = f"<= {high}" if math.isfinite(self.high) else ""
        return f"a multiple of {self.step} {bounds}" if self.step > 1 else bounds


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else str(value)


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, low_excluded=True)
FRACTION, SHARE = Range(0, 1), Range(0, 1, low_excluded=True)  # a share of the data cannot be 0

# Every numeric setting (each item of a list) and the values that make sense for it.
RANGES: dict[str, Range] = {
    # The layers split these channel counts into equal groups.
    "F_dim": Range(8, step=8),
    "L_dim": Range(2, step=2),
    "N_dim": Range(4, step=4),
    "D_out_dim": Range(8, step=8),
    "logvar_min": Range(),
    "logvar_max": Range(high=MAX_LOGVAR),
    "partial": SHARE,
    "fast_partial": SHARE,
    "fast_train_epoch": AT_LEAST_0,
    # Frame 0 is given, so a window or rollout needs a second frame to predict.
    "train_vi_len": Range(2),
    "val_vi_len": Range(2),
    "frame_H": Range(MIN_FRAME_SIDE),
    "frame_W": Range(MIN_FRAME_SIDE),
    "num_workers": AT_LEAST_0,
    "synthetic_train_frames": AT_LEAST_1,
    "tfr": FRACTION,
    "tfr_sde": AT_LEAST_0,
    "tfr_d_step": FRACTION,
    "kl_anneal_cycle": AT_LEAST_1,
    "kl_anneal_ratio": SHARE,
    "bn_recalibration_windows": AT_LEAST_0,
    "batch_size": AT_LEAST_1,
    "lr": POSITIVE,
    "lr_gamma": SHARE,
    "max_grad_norm": AT_LEAST_0,
    # A milestone at epoch 0 would lower the learning rate before the first step.
    "lr_milestones": AT_LEAST_1,
    "num_epoch": AT_LEAST_1,
    "per_save": AT_LEAST_1,
    "gradient_accumulation_steps": AT_LEAST_1,
    "seed": Range(0, MAX_SEED),
    "checkpointing_steps": AT_LEAST_1,
    "checkpoints_total_limit": AT_LEAST_1,
    "max_nonfinite_steps": AT_LEAST_1,
    "eval_every": AT_LEAST_1,
    # 0 too, so that a course user who means GPU 0 gets the error that says how GPUs are chosen here.
    "gpu": AT_LEAST_0,
    "log_every": AT_LEAST_1,
}


def setting_label(name: str, source: str | None) -> str:
    """How a message names a setting: `--lr` when it came from a default, or from the command line as
    the flag typed there (a former name stays that name); `--config run.yaml: lr` when it came from a file."""
    if source is None:
        return f"--{name}"
    return source if _is_flag(source) else f"{source}: {name}"


def _is_flag(source: str | None) -> bool:
    return source is not None and source.startswith("--") and " " not in source


def validate(config: Config, sources: dict[str, str] | None = None) -> None:
    """Every setting by its meaning, then the rules between settings. The first broken rule is a
    UserError naming the setting; `sources` says where each explicit setting came from."""
    sources = sources or {}
    settings = config.flat()
    for name, option in options().items():
        problem = _problem(option, settings[name])
        if problem:
            raise UserError(f"{setting_label(name, sources.get(name))} {problem}, got {settings[name]!r}")
    for names, problem in _conflicts(config):
        # Named as flags in the message; a file any of them came from goes in front.
        files = [source for n in names if (source := sources.get(n)) is not None and not _is_flag(source)]
        raise UserError(f"{files[0]}: {problem}" if files else problem)


def _problem(option: Option, value: Any) -> str | None:
    kind = option.base_type
    if value is None or option.choices is not None or kind is bool:
        return None
    if kind is str:
        return "must be a non-empty text without NUL characters" if not value or "\0" in value else None
    allowed = RANGES[option.name]
    if typing.get_origin(kind) is list:
        unordered = any(a >= b for a, b in zip(value, value[1:]))
        return f"must be increasing, each {allowed}" if unordered or any(map(allowed.problem, value)) else None
    return allowed.problem(value)


def _conflicts(config: Config) -> Iterator[tuple[tuple[str, ...], str]]:
    """The rules between settings: (the settings involved, what is wrong) for each one broken."""
    model, train = config.model, config.train
    fused = model.F_dim + model.L_dim + model.N_dim
    if fused % 4:
        yield ("F_dim", "L_dim", "N_dim"), f"--F_dim + --L_dim + --N_dim must be a multiple of 4 (the decoder fusion quarters it), got {fused}"
    if not model.logvar_min < model.logvar_max:
        yield ("logvar_min", "logvar_max"), f"--logvar_min ({model.logvar_min}) must be below --logvar_max ({model.logvar_max})"
    if train.overwrite and train.resume_from_checkpoint:
        yield ("overwrite", "resume_from_checkpoint"), "--overwrite and --resume_from_checkpoint contradict each other: choose one"


def number(kind: type, allowed: Range) -> Callable[[str], Any]:
    """An argparse type for the other commands' numeric flags: `kind` held to `allowed`."""

    def convert(text: str) -> Any:
        try:
            value = _as_scalar(kind, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind.__name__}, got {text!r}") from None
        problem = allowed.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    return convert


# ---- lengths the dataset must have --------------------------------------------------------------


def check_train_length(data: DataConfig, folder: Path, frames: int) -> None:
    """--train_vi_len against the `frames` of the training video in `folder` (and --partial of them)."""
    usable = int(frames * data.partial)
    if data.train_vi_len > usable:
        partial = f", {usable} of them with --partial {data.partial}" if usable < frames else ""
        raise UserError(f"--train_vi_len {data.train_vi_len}: the training video {folder} has {frames} frames{partial}, too few for one window")


def val_length(val_vi_len: int | None, folder: Path, frames: int, *, shorter_ok: bool) -> int:
    """The frames of the validation video (in `folder`, `frames` long) to roll out for --val_vi_len
    (None: all). Asking for more is an error, or with `shorter_ok` a warning that all are used."""
    if val_vi_len is None or val_vi_len <= frames:
        return val_vi_len or frames
    problem = f"--val_vi_len {val_vi_len}: the validation video {folder} has {frames} frames"
    if not shorter_ok:
        raise UserError(f"{problem}; use --val_vi_len {frames} or fewer")
    print(f"warning: {problem}; rolling out all {frames}", file=sys.stderr, flush=True)
    return frames

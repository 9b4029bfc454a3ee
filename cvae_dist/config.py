"""Typed configuration: every course flag under its course name and default, plus ours.

A run's settings resolve in this order, later winning: field defaults, the chosen
`preset`'s widths, a YAML file (`--config`), then command-line flags. The YAML file and
the command line use the same flat names, so a sweep point is just a list of flags.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cvae_dist.errors import UserError


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

    def __post_init__(self) -> None:
        for name, divisor in (("F_dim", 8), ("L_dim", 2), ("N_dim", 4), ("D_out_dim", 8)):
            if getattr(self, name) <= 0 or getattr(self, name) % divisor:
                raise UserError(f"--{name} must be a positive multiple of {divisor}, got {getattr(self, name)}")
        if (self.F_dim + self.L_dim + self.N_dim) % 4:
            raise UserError("--F_dim + --L_dim + --N_dim must be a multiple of 4 (the decoder fusion quarters it)")
        if not self.logvar_min < self.logvar_max:
            raise UserError(f"--logvar_min ({self.logvar_min}) must be below --logvar_max ({self.logvar_max})")


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
    partial: float = 1.0
    """Fraction of the training video to use, from its start (course --partial)."""
    train_vi_len: int = 16
    """Frames per training window; the video is cut into consecutive non-overlapping windows."""
    val_vi_len: int = 630
    """Frames of the validation video to roll out from its first frame."""
    frame_H: int = 32
    """Height frames are resized to (bilinear)."""
    frame_W: int = 64
    """Width frames are resized to (bilinear)."""
    num_workers: int = 4
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

    def __post_init__(self) -> None:
        for name in ("partial", "fast_partial"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise UserError(f"--{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("train_vi_len", "val_vi_len"):
            if getattr(self, name) < 2:
                raise UserError(f"--{name} must be at least 2 frames, got {getattr(self, name)}")
        for name in ("frame_H", "frame_W", "synthetic_train_frames"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise UserError(f"--num_workers must be >= 0, got {self.num_workers}")


@dataclass
class MethodConfig:
    """Teacher forcing and KL annealing."""

    tfr: float = 1.0
    """Initial teacher-forcing ratio: the chance that a coin says 'feed the true previous frame'."""
    tfr_sde: int = 10
    """Epoch from which the teacher-forcing ratio decays."""
    tfr_d_step: float = 0.1
    """Amount the teacher-forcing ratio drops each epoch from --tfr_sde on."""
    tfr_coin: Literal["epoch", "batch", "frame"] = "epoch"
    """Draw the teacher-forcing coin once per epoch (course), once per optimizer step ('batch': one coin for all its accumulated batches, on every process), or once per frame of every window ('frame': scheduled sampling; every step then decodes frame by frame)."""
    kl_anneal_type: Literal["Cyclical", "Monotonic", "Without"] = "Cyclical"
    """KL weight schedule: Cyclical (Fu et al. 2019), Monotonic (one cycle) or Without (beta = 1)."""
    kl_anneal_cycle: int = 10
    """Number of annealing cycles over the whole run (Cyclical)."""
    kl_anneal_ratio: float = 1.0
    """Fraction of each cycle over which beta rises linearly from 0 to 1 before holding at 1."""
    kl_anneal_unit: Literal["epoch", "step"] = "epoch"
    """Advance beta once per epoch (course) or once per optimizer step (Fu et al.)."""
    one_step_weight: float = 0.0
    """Weight of a second reconstruction loss, on every frame predicted from the true previous frame, in steps that are not teacher-forced (0: off): keeps a free-running model using the previous frame, for one more batched decoding per step."""
    kl_last_frame_only: bool = False
    """Reproduce a common student bug: weigh only the last frame's KL instead of summing over frames."""
    bn_recalibration_windows: int = 64
    """Training windows whose pose labels re-estimate the BatchNorm statistics before each validation (0: keep the running averages, as the course does)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.tfr <= 1.0:
            raise UserError(f"--tfr must be in [0, 1], got {self.tfr}")
        if self.tfr_d_step < 0 or self.tfr_sde < 0:
            raise UserError("--tfr_d_step and --tfr_sde must be >= 0")
        if self.bn_recalibration_windows < 0:
            raise UserError(f"--bn_recalibration_windows must be >= 0, got {self.bn_recalibration_windows}")
        if self.kl_anneal_cycle < 1:
            raise UserError(f"--kl_anneal_cycle must be >= 1, got {self.kl_anneal_cycle}")
        if not 0.0 < self.kl_anneal_ratio <= 1.0:
            raise UserError(f"--kl_anneal_ratio must be in (0, 1], got {self.kl_anneal_ratio}")


@dataclass
class TrainConfig:
    """Optimisation, checkpoints, logging and the run's folders."""

    preset: Literal["lab", "tiny"] = "lab"
    """Network widths: 'lab' is the course's exact model, 'tiny' a small one for CPUs."""
    save_root: str = "runs/default"
    """Folder of this run: config, checkpoints, best weights, evaluation and (by default) TensorBoard logs."""
    batch_size: int = 2
    """Windows per batch on each process."""
    lr: float = 0.001
    """Initial learning rate."""
    optim: Literal["Adam", "AdamW"] = "Adam"
    """Optimizer."""
    lr_milestones: list[int] = field(default_factory=lambda: [2, 5])
    """Epochs at which the learning rate is multiplied by --lr_gamma (course MultiStepLR)."""
    lr_gamma: float = 0.1
    """Factor applied to the learning rate at each milestone."""
    num_epoch: int = 70
    """Number of epochs."""
    per_save: int = 3
    """Save a checkpoint every this many epochs."""
    ckpt_path: str | None = None
    """Start from these weights (a checkpoint folder or a model.safetensors file) instead of a fresh model."""
    seed: int = 0
    """Seed of the weights, the latent noise, the shuffling and the teacher-forcing coins."""
    gradient_accumulation_steps: int = 1
    """Batches whose gradients are summed before each optimizer step."""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """Autocast precision; unset takes what `accelerate launch` or its config file says."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this before each optimizer step (0 turns clipping off)."""
    checkpointing_steps: int | None = None
    """Also save a checkpoint every this many optimizer steps (mid-epoch)."""
    checkpoints_total_limit: int | None = None
    """Keep at most this many step/epoch checkpoints (the best weights are always kept)."""
    resume_from_checkpoint: str | None = None
    """Resume the whole training state from a checkpoint folder, or 'latest' (newest intact) in --save_root."""
    overwrite: bool = False
    """Replace the run already in --save_root (its config, checkpoints, best weights, evaluation and logs) instead of refusing."""
    skip_nonfinite: bool = True
    """Skip optimizer steps whose loss or gradient is not finite (costs one host-device sync per optimizer step)."""
    max_nonfinite_steps: int = 20
    """Stop with an error after this many skipped (non-finite) optimizer steps in a row."""
    logging_dir: str | None = None
    """Folder for TensorBoard events; unset puts them in --save_root."""
    channels_last: bool = True
    """Keep activations channels-last, the layout CPU (oneDNN) and GPU (cuDNN) convolutions run fastest in."""
    compile: bool = False
    """Compile the training rollout with torch.compile (inductor); the first steps of each teacher-forcing mode wait for the compiler."""
    compile_backend: str = "inductor"
    """torch.compile backend used by --compile: 'inductor' generates kernels; 'eager' or 'aot_eager' only trace (quick checks that compiling works)."""
    activation_checkpointing: bool = False
    """Recompute each frame's activations in the backward pass instead of keeping them: far less memory for long windows, about a third more compute."""
    eval_every: int = 1
    """Roll out the validation video every this many epochs (and after the last)."""
    log_every: int = 10
    """Log training scalars every this many optimizer steps."""
    debug: bool = False
    """Show full tracebacks instead of one-line errors."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_epoch", "per_save", "gradient_accumulation_steps", "eval_every", "log_every", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpointing_steps", "checkpoints_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "method": MethodConfig, "train": TrainConfig}


@dataclass
class Config:
    """All settings of a training run, in four sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def flat(self) -> dict[str, Any]:
        """Every setting under its flag name, as written to config.yaml and logged as hparams."""
        return {k: v for section in SECTIONS for k, v in dataclasses.asdict(getattr(self, section)).items()}

    def digest(self, ignore: tuple[str, ...] = ()) -> str:
        """A short hash of the settings that shape the result, to tell runs apart."""
        settings = {k: v for k, v in self.flat().items() if k not in ignore}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


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
    """One flag: its section, type and documentation."""

    name: str
    section: str
    type: Any
    default: Any
    help: str

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
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and self.optional):
            if self.optional:
                return None
            raise UserError(f"{source}: '{self.name}' may not be empty")
        base = self.base_type
        try:
            if self.choices is not None:
                if value not in self.choices:
                    raise UserError(f"{source}: invalid '{self.name}' {value!r}; choose from {', '.join(map(str, self.choices))}")
                return value
            if base is bool:
                return _as_bool(value)
            if typing.get_origin(base) is list:
                items = value if isinstance(value, list) else [v for v in str(value).replace(",", " ").split() if v]
                (item_type,) = typing.get_args(base)
                return [_as_scalar(item_type, v) for v in items]
            return _as_scalar(base, value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: '{self.name}' must be {_type_name(self.type)}, got {value!r}") from None


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


def options() -> dict[str, Option]:
    """Every flag name -> its Option, across the four sections."""
    table = {}
    for section, cls in SECTIONS.items():
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            table[f.name] = Option(f.name, section, hints[f.name], default, docs.get(f.name, ""))
    return table


def build_parser(prog: str = "cvae_dist/train.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


def read_yaml(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """A YAML file holding a mapping; errors name it as `label` (default: the --config flag)."""
    label = label or f"--config {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except yaml.YAMLError as err:
        raise UserError(f"{label}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping of flag: value, got {type(data).__name__}")
    return data


def resolve(explicit: dict[str, tuple[Any, str]]) -> Config:
    """Build a Config from explicit settings, each given as name -> (value, where it came from)."""
    table = options()
    values: dict[str, Any] = {}
    for name, (value, source) in explicit.items():
        if name not in table:
            raise UserError(f"{source}: unknown setting '{name}'" + _did_you_mean(name, table))
        values[name] = table[name].coerce(value, source)
    preset = values.get("preset", table["preset"].default)
    merged = {**PRESETS[preset], **values}
    sections = {
        section: cls(**{k: v for k, v in merged.items() if table[k].section == section}) for section, cls in SECTIONS.items()
    }
    return Config(**sections)


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

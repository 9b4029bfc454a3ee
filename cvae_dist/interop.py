"""Checkpoints of the course's own code, in and out.

    python -m cvae_dist.interop import COURSE.ckpt OUTDIR     course checkpoint -> cvae_dist weights folder
    python -m cvae_dist.interop export CKPT COURSE.ckpt       cvae_dist weights -> course checkpoint (--force: see below)

The course's `Trainer.save` writes `torch.save({"state_dict", "optimizer", "lr", "tfr",
"last_epoch"})`, and its `load_checkpoint` reads it back with `load_state_dict(strict=True)`.
Our network has the course's parameter names, so the state dict passes through unchanged; the
widths are read off the tensor shapes. Files are always read with `weights_only=True`: a
checkpoint from the internet must not be able to run code.

An imported network keeps the course's behaviour (LeakyReLU slope 1, no output sigmoid), so it
predicts exactly what it predicted in the course code. An exported one trained with either fix
loads into the course's code but predicts something else there (from frame 1 on, and NaN within a
few frames for the defaults), so `export` rolls a few frames out both ways first and refuses
weights whose rollouts differ, unless given `--force`; `configs/course_compatible.yaml` trains
weights that pass. The course stores its model's own state dict under "optimizer" (a bug in its
`save`), so no optimizer state is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import Config, DataConfig, ModelConfig, from_flat
from cvae_dist.data.course import CourseDataset, to_unit_float
from cvae_dist.errors import ArgumentParser, UserError, output_folder, run_command
from cvae_dist.model import CVAE
from cvae_dist.rollout import generate
from cvae_dist.schedules import learning_rate

COURSE_KEYS = ("state_dict", "optimizer", "lr", "tfr", "last_epoch")
COURSE_STATE = "course_state.yaml"
# What Accelerate's save_state calls the optimizer and the first registered object (TrainingState).
ACCELERATE_OPTIMIZER = "optimizer.bin"
ACCELERATE_TRAINING_STATE = "custom_checkpoint_0.pkl"
# How to train weights that the course's code predicts the same with (docs/from-the-course-code.md).
COURSE_COMPATIBLE_CONFIG = "cvae_dist/configs/course_compatible.yaml"
COURSE_COMPATIBLE_FLAGS = "--output_activation none --course_leaky_relu"
# Frames the export check rolls out: the defaults' course rollout differs from frame 1 and turns NaN
# by frame 5, and 8 frames of the lab network take under a second on a CPU.
CHECK_FRAMES = 8
# The largest pixel difference (frames in [0, 1]) at which two rollouts count as the same. Compatible
# weights give the same bits both ways; 1e-4 (a hundred times float32 rounding) rather than 0 lets the
# two be batched differently. It is small because a difference compounds over the 630-frame rollout:
# the LeakyReLU slope alone moves the first 8 frames of even a freshly initialised network by 4e-3 or more.
CHECK_TOLERANCE = 1e-4


def read_course_checkpoint(path: str | Path) -> dict:
    """The course's checkpoint dict, read without unpickling arbitrary objects."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as err:  # a folder, no permission, a name too long
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise UserError(f"{path}: not a checkpoint that loads with weights_only=True ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise UserError(f"{path}: expected the course's checkpoint dict with keys {', '.join(COURSE_KEYS)}")
    return data


def widths_of(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """F_dim, L_dim, N_dim and D_out_dim of a course state dict, from its tensor shapes."""
    try:
        label = state["label_transformation.4.conv1.weight"].shape[0]
        posterior_in = state["Gaussian_Predictor.0.conv1.weight"].shape[1]
        latent = state["Gaussian_Predictor.6.weight"].shape[0] // 2
        decoder = state["Generator.0.block.0.conv1.0.weight"].shape[0]
    except KeyError as err:
        raise UserError(f"state dict has no {err}: not the course's VAE_Model") from None
    return {"F_dim": posterior_in - label, "L_dim": label, "N_dim": latent, "D_out_dim": decoder}


def import_course(course_ckpt: str | Path, out_dir: str | Path) -> Path:
    """Write OUTDIR/model.safetensors, its configs (checkpoint.write_weights_config) and course_state.yaml from a course checkpoint."""
    data = read_course_checkpoint(course_ckpt)
    state = {k: v.contiguous() for k, v in data["state_dict"].items()}
    settings = {**widths_of(state), "course_leaky_relu": True, "output_activation": "none", "zero_init_posterior": False}
    if "lr" in data:
        settings["lr"] = float(data["lr"])
    if "tfr" in data:
        settings["tfr"] = float(data["tfr"])
    config = from_flat(settings, str(course_ckpt))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / ckpt.WEIGHTS))
    ckpt.load_weights_into(CVAE(config.model), out / ckpt.WEIGHTS)  # refuse what would not load strictly
    ckpt.write_weights_config(config, out)
    course_state = {"lr": config.train.lr, "tfr": config.method.tfr, "last_epoch": int(data.get("last_epoch", 0))}
    (out / COURSE_STATE).write_text(yaml.safe_dump(course_state, sort_keys=False))
    return out


def _training_progress(folder: Path, config: Config) -> tuple[dict, dict]:
    """(lr, tfr, last_epoch) and the optimizer state of the folder the weights came from."""
    if (folder / COURSE_STATE).is_file():
        return yaml.safe_load((folder / COURSE_STATE).read_text()), {}
    epoch, tfr = 0, config.method.tfr
    if (folder / ACCELERATE_TRAINING_STATE).is_file():
        state = torch.load(folder / ACCELERATE_TRAINING_STATE, map_location="cpu", weights_only=True)
        epoch, tfr = int(state["epoch"]), float(state["tfr"])
    optimizer = {}
    if (folder / ACCELERATE_OPTIMIZER).is_file():
        optimizer = torch.load(folder / ACCELERATE_OPTIMIZER, map_location="cpu", weights_only=True)
    return {"lr": learning_rate(config.train, epoch), "tfr": tfr, "last_epoch": epoch}, optimizer


def fixes_the_course_lacks(model: ModelConfig) -> list[str]:
    """The settings of ours with which a network computes something else in the course's code."""
    fixes = []
    if model.output_activation == "sigmoid":
        fixes.append("a sigmoid output (the course's Generator has none)")
    if not model.course_leaky_relu:
        fixes.append("LeakyReLU slope 0.01 where the course's nn.LeakyReLU(True) has 1.0")
    return fixes


def course_network(model: ModelConfig) -> CVAE:
    """Our network as the course's code computes it: LeakyReLU(True) of slope 1.0 and no output activation.

    The other settings the course lacks (zero-initialised posterior head, clamped log-variance,
    frozen BatchNorm) change training, not the test-time rollout, so they are kept."""
    return CVAE(dataclasses.replace(model, course_leaky_relu=True, output_activation="none"))


def _check_frames(data: DataConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first frame (1, 3, H, W) and pose labels (1, CHECK_FRAMES + 1, 3, H, W) the export check
    rolls out, and what they are: the run's validation video where its --DR is readable, whose poses
    drive the network as the course's test does, else fixed random frames."""
    if data.DR is not None:
        try:
            video = CourseDataset(data.DR, data.frame_H, data.frame_W, progress=False).val()
        except UserError:
            pass  # moved, or another machine's path: random frames still show a difference
        else:
            first = to_unit_float(torch.from_numpy(np.array(video.frames[:1])))
            labels = to_unit_float(torch.from_numpy(np.array(video.labels[: CHECK_FRAMES + 1])))
            return first, labels[None], f"the first {len(labels) - 1} frames of {data.DR}'s validation video"
    generator = torch.Generator().manual_seed(0)
    first = torch.rand((1, 3, data.frame_H, data.frame_W), generator=generator)
    labels = torch.rand((1, CHECK_FRAMES + 1, 3, data.frame_H, data.frame_W), generator=generator)
    return first, labels, f"{CHECK_FRAMES} random frames (the run's --DR is unset or not readable here)"


def course_rollout_difference(model: CVAE, data: DataConfig) -> str | None:
    """How the course's code rolls `model`'s weights out differently from ours, or None where it predicts the same.

    Both networks roll the same frames out with the same z ~ N(0, I) at every step, as the course's
    test does (previous prediction, pose, z, no clamp); frames agree within CHECK_TOLERANCE."""
    course = course_network(model.config)
    course.load_state_dict(model.state_dict())
    first, labels, source = _check_frames(data)
    ours, theirs = (generate(network.eval(), first, labels, generator=torch.Generator().manual_seed(0))[0, 1:] for network in (model, course))
    same = torch.isclose(theirs, ours, rtol=0, atol=CHECK_TOLERANCE, equal_nan=True).flatten(1).all(dim=1)
    if same.all():
        return None
    largest = torch.where(ours.isfinite() & theirs.isfinite(), (theirs - ours).abs(), 0).max()
    differs = (
        f"rolled out over {source}, the course's code predicts other frames from frame {int((~same).nonzero()[0]) + 1} on (by up to {largest:.2g})"
    )
    broken = (~theirs.isfinite()).flatten(1).any(dim=1) & ours.isfinite().flatten(1).all(dim=1)
    return differs + (f" and NaN or inf from frame {int(broken.nonzero()[0]) + 1} on" if broken.any() else "")


def export_course(source: str | Path, course_ckpt: str | Path, force: bool = False) -> Path:
    """Write a course checkpoint from a run folder, checkpoint folder or model.safetensors.

    Weights that the course's code would roll out differently are refused unless `force`, which warns instead."""
    found = ckpt.find_weights(source)
    weights, config, model = found.file, found.config, found.model()
    difference = course_rollout_difference(model, config.data)
    if difference:
        fixes = fixes_the_course_lacks(config.model)
        problem = f"{weights}{' was trained with ' + ' and '.join(fixes) if fixes else ''}: {difference}"
        if not force:
            raise UserError(
                f"{problem}; train with --config {COURSE_COMPATIBLE_CONFIG} (or {COURSE_COMPATIBLE_FLAGS}) for weights that "
                "predict the same there, or add --force to export these anyway"
            )
        print(f"warning: {problem}; exporting anyway (--force)", file=sys.stderr)
    progress, optimizer = _training_progress(weights.parent, config)
    out = Path(course_ckpt)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as handle:  # open() rather than torch.save's own, whose errors are not OSErrors
            torch.save({"state_dict": model.state_dict(), "optimizer": optimizer, **progress}, handle)
    except OSError as err:  # a folder of that name, a file in the way, no permission, a full disk
        raise UserError(f"{out}: cannot write it ({err.strerror})") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m cvae_dist.interop",
        description="Convert checkpoints between the course's code (torch.save dict) and cvae_dist (safetensors + config.yaml).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="course checkpoint -> cvae_dist weights folder (model.safetensors, config.yaml)")
    importer.add_argument("course_ckpt", metavar="COURSE.ckpt", help="a checkpoint written by the course's Trainer.save")
    importer.add_argument("out_dir", metavar="OUTDIR", type=output_folder, help="folder to write; usable as --ckpt_path, --ckpt of evaluate/generate")
    exporter = commands.add_parser("export", help="cvae_dist weights -> a checkpoint the course's VAE_Model loads with strict=True")
    exporter.add_argument("ckpt", metavar="CKPT", help="a run folder (its best weights), checkpoint folder or model.safetensors")
    exporter.add_argument("course_ckpt", metavar="COURSE.ckpt", help="file to write")
    exporter.add_argument(
        "--force",
        action="store_true",
        help=(
            "export even weights that the course's code rolls out differently (trained with the output sigmoid or "
            f"LeakyReLU slope 0.01, i.e. without --config {COURSE_COMPATIBLE_CONFIG}), with a warning instead of "
            f"an error; export first rolls {CHECK_FRAMES} frames out through both networks to check"
        ),
    )
    return parser


def _convert(args: argparse.Namespace) -> None:
    out = import_course(args.course_ckpt, args.out_dir) if args.command == "import" else export_course(args.ckpt, args.course_ckpt, args.force)
    print(f"wrote {out}")


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _convert)


if __name__ == "__main__":
    raise SystemExit(main())

"""Validation: roll the validation video out from its first frame and score every frame.

`python -m cvae_dist.evaluate --ckpt CKPT --DR ROOT --out DIR [--samples N] [--z prior|mean]`
writes the PSNR and SSIM of each frame (CSV), a plot of the PSNR, and a GIF of
prediction | truth | pose, and prints the averages next to the copy-the-first-frame baseline's.
Training runs the same evaluation every epoch.

Beside the rollout it scores two diagnostics on the same frames: the one-step PSNR (each frame
predicted from the true previous frame, so no error accumulates) and the PSNR of copying the
previous frame. A model that uses the previous frame beats copying it one step ahead; one whose
one-step score equals its rollout score draws each frame from the pose alone.

Scores are computed on the frames as the network outputs them, unclamped, as the course's code
computes them; only pictures (the GIF) are clamped to [0, 1]. With the default output sigmoid
the two are the same; docs/method.md (section 7) measures the difference without it.

A stochastic model is scored on N latent samples, rolled out together in one batch: mean-of-N
averages each frame's score over the samples; best-of-N takes the sample with the best average
score (per metric), as Denton & Fergus (2018) report SVG.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from cvae_dist.config import Range, number
from cvae_dist.data import val_length
from cvae_dist.data.course import Video, to_unit_float
from cvae_dist.errors import ArgumentParser, UserError, disk_full, output_folder, run_command
from cvae_dist.metrics import average_psnr, psnr_per_frame, ssim_per_frame
from cvae_dist.rollout import generate, one_step


@dataclass
class Evaluation:
    """A validation rollout of N latent samples and its scores; frame 0 is the given frame."""

    pred: torch.Tensor
    """The sample with the best average PSNR, (T, 3, H, W) as the network output it (in [0, 1] with the output sigmoid), on the CPU."""
    psnr_samples: torch.Tensor
    """PSNR of each sample's frames against the truth, (N, T)."""
    ssim_samples: torch.Tensor
    """SSIM of each sample's frames against the truth, (N, T)."""
    baseline_psnr: torch.Tensor
    """PSNR of each frame for the copy-the-first-frame baseline, (T,)."""
    one_step_samples: torch.Tensor
    """PSNR of each sample's frames predicted one step ahead, from the true previous frame, (N, T)."""
    copy_previous_psnr: torch.Tensor
    """PSNR of each frame for copying the true previous frame, (T,)."""

    @property
    def samples(self) -> int:
        return self.psnr_samples.shape[0]

    @property
    def psnr(self) -> torch.Tensor:
        """Mean-of-N PSNR of each frame, (T,)."""
        return self.psnr_samples.mean(dim=0)

    @property
    def ssim(self) -> torch.Tensor:
        """Mean-of-N SSIM of each frame, (T,)."""
        return self.ssim_samples.mean(dim=0)

    @property
    def one_step_psnr(self) -> torch.Tensor:
        """Mean-of-N one-step PSNR of each frame, (T,)."""
        return self.one_step_samples.mean(dim=0)

    @property
    def best_psnr(self) -> torch.Tensor:
        """Best-of-N PSNR of each frame: the frames of the sample with the best average PSNR, (T,)."""
        return self.psnr_samples[average_psnr(self.psnr_samples).argmax()]

    @property
    def best_ssim(self) -> torch.Tensor:
        """Best-of-N SSIM of each frame: the frames of the sample with the best average SSIM, (T,)."""
        return self.ssim_samples[average_psnr(self.ssim_samples).argmax()]

    @property
    def average(self) -> float:
        return float(average_psnr(self.psnr))

    @property
    def baseline_average(self) -> float:
        return float(average_psnr(self.baseline_psnr))

    @property
    def one_step_average(self) -> float:
        return float(average_psnr(self.one_step_psnr))

    @property
    def copy_previous_average(self) -> float:
        return float(average_psnr(self.copy_previous_psnr))

    def averages(self) -> dict[str, float]:
        """Every score averaged over frames 1..T-1."""
        curves = {
            "psnr": self.psnr,
            "ssim": self.ssim,
            "best_psnr": self.best_psnr,
            "best_ssim": self.best_ssim,
            "one_step_psnr": self.one_step_psnr,
            "copy_previous_psnr": self.copy_previous_psnr,
        }
        return {name: float(average_psnr(curve)) for name, curve in curves.items()}


def evaluate_video(
    model,
    video: Video,
    device: torch.device | str,
    length: int | None = None,
    seed: int = 0,
    z: str = "prior",
    autocast=contextlib.nullcontext,
    samples: int = 1,
    on_frame: Callable[[], None] | None = None,
) -> Evaluation:
    """Roll out the first `length` frames of `video` from its first frame, `samples` times in one
    batch, with the model in eval mode; `on_frame` is called after each predicted frame (or batch of frames).

    The prior's noise comes from a generator seeded with `seed`, so the score of a given model is
    reproducible and evaluation leaves the training random state untouched.
    """
    length = min(length or len(video.frames), len(video.frames))
    truth = to_unit_float(torch.from_numpy(np.array(video.frames[:length])))
    labels = to_unit_float(torch.from_numpy(np.array(video.labels[:length]))).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with autocast():
            first = truth[:1].to(device).expand(samples, -1, -1, -1)
            pred = generate(model, first, labels[None].expand(samples, -1, -1, -1, -1), z=z, generator=generator, on_frame=on_frame)
            ahead = one_step(
                model,
                truth[None].to(device).expand(samples, -1, -1, -1, -1),
                labels[None].expand(samples, -1, -1, -1, -1),
                z=z,
                generator=generator,
                on_frame=on_frame,
            )
    finally:
        model.train(was_training)
    # Scored as the network outputs them, as the course's code scores them: without the output
    # sigmoid they may leave [0, 1], and a clamp would raise the score (docs/method.md, section 7).
    pred = pred.float().cpu()
    psnr = psnr_per_frame(pred, truth)
    return Evaluation(
        pred=pred[average_psnr(psnr).argmax()],
        psnr_samples=psnr,
        ssim_samples=ssim_per_frame(pred, truth),
        baseline_psnr=psnr_per_frame(truth[:1].expand_as(truth), truth),
        one_step_samples=psnr_per_frame(ahead.float().cpu(), truth),
        copy_previous_psnr=psnr_per_frame(torch.cat([truth[:1], truth[:-1]]), truth),
    )


def write_psnr_csv(evaluation: Evaluation, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "psnr", "baseline_psnr", "ssim", "best_psnr", "best_ssim", "one_step_psnr", "copy_previous_psnr"])
        columns = [
            evaluation.psnr,
            evaluation.baseline_psnr,
            evaluation.ssim,
            evaluation.best_psnr,
            evaluation.best_ssim,
            evaluation.one_step_psnr,
            evaluation.copy_previous_psnr,
        ]
        for t in range(1, len(evaluation.psnr)):
            writer.writerow([t, *(f"{column[t]:.4f}" for column in columns)])


def plot_psnr(evaluation: Evaluation, path: Path, title: str = "PSNR per frame") -> None:
    from matplotlib.figure import Figure

    frames = np.arange(1, len(evaluation.psnr))
    figure = Figure(figsize=(10, 3.5), layout="constrained")
    axes = figure.subplots()
    mean_of = f"mean of {evaluation.samples} samples, " if evaluation.samples > 1 else ""
    axes.plot(frames, evaluation.psnr[1:].numpy(), label=f"model ({mean_of}avg {evaluation.average:.2f} dB)", linewidth=1.2)
    if evaluation.samples > 1:
        best = evaluation.averages()["best_psnr"]
        axes.plot(frames, evaluation.best_psnr[1:].numpy(), label=f"best of {evaluation.samples} (avg {best:.2f} dB)", linewidth=1.0)
    references = [
        ("one step ahead", evaluation.one_step_psnr, evaluation.one_step_average, dict(linewidth=0.8, color="tab:green", alpha=0.8)),
        (
            "copy previous frame",
            evaluation.copy_previous_psnr,
            evaluation.copy_previous_average,
            dict(linewidth=0.8, linestyle=":", color="black", alpha=0.7),
        ),
        ("copy first frame", evaluation.baseline_psnr, evaluation.baseline_average, dict(linewidth=1.0, linestyle="--", color="grey")),
    ]
    for name, psnr, average, style in references:
        axes.plot(frames, psnr[1:].numpy(), label=f"{name} (avg {average:.2f} dB)", **style)
    axes.set(xlabel="frame", ylabel="PSNR (dB)", title=title, xlim=(1, len(evaluation.psnr) - 1))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    figure.savefig(path, dpi=120)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames -> uint8 pixels: clamped to [0, 1], all a pixel can show, then rint(x * 255), the course's submission rounding."""
    return np.rint(frames.float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)


def write_panels_gif(panels: list[np.ndarray], path: Path, scale: int = 2, fps: int = 20) -> None:
    """Videos of uint8 (T, 3, H, W) side by side, one GIF frame per video frame."""
    length, _, height, _ = panels[0].shape
    separator = np.full((length, 3, height, 1), 255, dtype=np.uint8)
    pieces = [piece for panel in panels for piece in (separator, panel)][1:]
    frames = np.concatenate(pieces, axis=3).transpose(0, 2, 3, 1).repeat(scale, axis=1).repeat(scale, axis=2)
    # Encoded in memory, then written: a failed write (a full disk) then fails once, here, rather than
    # again in imageio's plugin as it is collected.
    path.write_bytes(iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0))


def write_gif(pred: torch.Tensor, video: Video, path: Path) -> None:
    """prediction | truth | pose, in `path` (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    length = len(pred)
    write_panels_gif([to_uint8(pred), np.asarray(video.frames[:length]), np.asarray(video.labels[:length])], path)


def write_evaluation(evaluation: Evaluation, video: Video, out_dir: str | Path, title: str = "PSNR per frame") -> dict[str, Path]:
    """The CSV, plot and GIF of an evaluation in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "psnr_per_frame.csv", "plot": out / "psnr_per_frame.png", "gif": out / "rollout.gif"}
    try:
        write_psnr_csv(evaluation, paths["csv"])
        plot_psnr(evaluation, paths["plot"], title)
        write_gif(evaluation.pred, video, paths["gif"])
    except BaseException as err:
        # Half an evaluation would pass for a whole one: none of its files stay.
        for path in paths.values():
            path.unlink(missing_ok=True)
        full = disk_full(err, out, "the evaluation", "the weights it scored are untouched; run the evaluation again with space to spare")
        if full is not None:
            raise full from None
        raise
    return paths


def summary_line(evaluation: Evaluation) -> str:
    line = (
        f"average PSNR over frames 1-{len(evaluation.psnr) - 1}: {evaluation.average:.2f} dB "
        f"(copy-the-first-frame baseline: {evaluation.baseline_average:.2f} dB, "
        f"{evaluation.average - evaluation.baseline_average:+.2f} dB); average SSIM {evaluation.averages()['ssim']:.4f}\n"
        f"one step ahead (each frame from the true previous frame): {evaluation.one_step_average:.2f} dB "
        f"(copy-the-previous-frame baseline: {evaluation.copy_previous_average:.2f} dB, "
        f"{evaluation.one_step_average - evaluation.copy_previous_average:+.2f} dB)"
    )
    if evaluation.samples == 1:
        return line
    scores = evaluation.averages()
    return (
        f"{line}\nover {evaluation.samples} samples: PSNR mean-of-N {scores['psnr']:.2f} dB, best-of-N {scores['best_psnr']:.2f} dB; "
        f"SSIM mean-of-N {scores['ssim']:.4f}, best-of-N {scores['best_ssim']:.4f}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m cvae_dist.evaluate",
        description=(
            "Roll the validation video out from its first frame and score each frame (PSNR, SSIM), over one or N latent samples. "
            "Frames are scored as the network outputs them, not clamped to [0, 1], as the course's code scores them "
            "(the same thing with the default output sigmoid; see docs/method.md for --output_activation none)."
        ),
    )
    add_inference_arguments(parser, out_help="folder for psnr_per_frame.csv, psnr_per_frame.png and rollout.gif")
    parser.add_argument("--val_vi_len", type=number(int, Range(2)), default=None, help="frames to roll out, at least 2 (default: the whole video)")
    parser.add_argument(
        "--samples",
        type=number(int, Range(1)),
        default=1,
        metavar="N",
        help="latent samples per video, rolled out in one batch; scores are reported as mean-of-N and best-of-N (default: 1)",
    )
    return parser


def add_inference_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """The flags every command that rolls a trained model out shares (evaluate, generate)."""
    parser.add_argument("--ckpt", required=True, help="a run folder (uses its best weights), checkpoint folder or model.safetensors")
    parser.add_argument("--DR", help="dataset root in the course layout (default: the one the checkpoint was trained on)")
    parser.add_argument("--out", required=True, type=output_folder, help=out_help)
    parser.add_argument("--z", choices=["prior", "mean"], default="prior", help="draw z from N(0,I), or use its mean (default: prior)")
    parser.add_argument("--seed", type=number(int, INFERENCE_SEEDS), default=0, help="seed of the prior's noise (default: 0)")
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device: cpu, cuda, cuda:N or mps (default: cuda if available)",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


# What torch.Generator.manual_seed takes.
INFERENCE_SEEDS = Range(0, 2**64 - 1)


def torch_device(text: str) -> torch.device:
    """An argparse type: a device this machine has (a typo or a missing GPU is an error before anything loads)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    count = {"cpu": 1, "cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}.get(device.type, 0)
    if (device.index or 0) >= count:
        raise argparse.ArgumentTypeError(f"{text}: no such device here (cpu, cuda, cuda:N or mps)")
    return device


def load_for_inference(args: argparse.Namespace, ckpt_flag: str = "--ckpt"):
    """The checkpoint's network in eval mode and its dataset (--DR overrides the one it was trained on);
    errors about args.ckpt name it as `ckpt_flag`."""
    from cvae_dist.checkpoint import load_model
    from cvae_dist.data import dataset_root
    from cvae_dist.data.course import CourseDataset

    model, config = load_model(args.ckpt, args.device, ckpt_flag)
    if args.DR is not None:
        config.data.DR = args.DR
    return model, CourseDataset(dataset_root(config.data), config.data.frame_H, config.data.frame_W)


def evaluate_checkpoint(args: argparse.Namespace, ckpt_flag: str = "--ckpt") -> None:
    """The evaluate command on parsed flags (also train.py --test, whose weights come from `ckpt_flag`): scores printed, files written."""
    model, dataset = load_for_inference(args, ckpt_flag)
    # The whole video when asked for more: --val_vi_len's default, and the CSV shows the frames scored.
    length = val_length(args.val_vi_len, *dataset.frame_count("val"), shorter_ok=True)
    video = dataset.val()
    evaluation = evaluate_video(model, video, args.device, length, seed=args.seed, z=args.z, samples=args.samples)
    paths = write_evaluation(evaluation, video, args.out)
    print(summary_line(evaluation))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.samples > 1 and args.z == "mean":
        raise UserError("--samples > 1 needs --z prior: with z at its mean every sample is the same")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, evaluate_checkpoint)


if __name__ == "__main__":
    raise SystemExit(main())

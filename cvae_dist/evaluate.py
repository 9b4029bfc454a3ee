"""Validation: roll the validation video out from its first frame and score every frame.

`python -m cvae_dist.evaluate --ckpt CKPT --DR ROOT --out DIR` writes the PSNR of each frame
(CSV), a plot of it, and a GIF of prediction | truth | pose, and prints the average PSNR next to
the copy-the-first-frame baseline's. Training runs the same evaluation every epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from cvae_dist.data.course import Video, to_unit_float
from cvae_dist.errors import UserError
from cvae_dist.metrics import average_psnr, psnr_per_frame
from cvae_dist.rollout import generate


@dataclass
class Evaluation:
    """A validation rollout and its scores; frame 0 is the given frame."""

    pred: torch.Tensor
    """Predicted video, (T, 3, H, W) in [0, 1], on the CPU."""
    psnr: torch.Tensor
    """PSNR of each frame against the truth, (T,)."""
    baseline_psnr: torch.Tensor
    """PSNR of each frame for the copy-the-first-frame baseline, (T,)."""

    @property
    def average(self) -> float:
        return float(average_psnr(self.psnr))

    @property
    def baseline_average(self) -> float:
        return float(average_psnr(self.baseline_psnr))


def evaluate_video(
    model,
    video: Video,
    device: torch.device | str,
    length: int | None = None,
    seed: int = 0,
    z: str = "prior",
    autocast=contextlib.nullcontext,
) -> Evaluation:
    """Roll out the first `length` frames of `video` from its first frame, with the model in eval mode.

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
            pred = generate(model, truth[:1].to(device), labels[None], z=z, generator=generator)[0]
    finally:
        model.train(was_training)
    pred = pred.float().clamp(0, 1).cpu()
    baseline = truth[:1].expand_as(truth)
    return Evaluation(pred=pred, psnr=psnr_per_frame(pred, truth), baseline_psnr=psnr_per_frame(baseline, truth))


def write_psnr_csv(evaluation: Evaluation, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "psnr", "baseline_psnr"])
        for t in range(1, len(evaluation.psnr)):
            writer.writerow([t, f"{evaluation.psnr[t]:.4f}", f"{evaluation.baseline_psnr[t]:.4f}"])


def plot_psnr(evaluation: Evaluation, path: Path, title: str = "PSNR per frame") -> None:
    from matplotlib.figure import Figure

    frames = np.arange(1, len(evaluation.psnr))
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(frames, evaluation.psnr[1:].numpy(), label=f"model (avg {evaluation.average:.2f} dB)", linewidth=1.2)
    axes.plot(
        frames,
        evaluation.baseline_psnr[1:].numpy(),
        label=f"copy first frame (avg {evaluation.baseline_average:.2f} dB)",
        linewidth=1.0,
        linestyle="--",
        color="grey",
    )
    axes.set(xlabel="frame", ylabel="PSNR (dB)", title=title, xlim=(1, len(evaluation.psnr) - 1))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    figure.savefig(path, dpi=120)


def write_gif(evaluation: Evaluation, video: Video, path: Path, scale: int = 2, fps: int = 20) -> None:
    """prediction | truth | pose, side by side, one GIF frame per video frame."""
    length = len(evaluation.pred)
    panels = [
        (evaluation.pred.numpy() * 255).round().astype(np.uint8),
        np.asarray(video.frames[:length]),
        np.asarray(video.labels[:length]),
    ]
    separator = np.full((length, 3, panels[0].shape[2], 1), 255, dtype=np.uint8)
    frames = np.concatenate([panels[0], separator, panels[1], separator, panels[2]], axis=3)
    frames = frames.transpose(0, 2, 3, 1).repeat(scale, axis=1).repeat(scale, axis=2)
    iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)


def write_evaluation(evaluation: Evaluation, video: Video, out_dir: str | Path, title: str = "PSNR per frame") -> dict[str, Path]:
    """The CSV, plot and GIF of an evaluation in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "psnr_per_frame.csv", "plot": out / "psnr_per_frame.png", "gif": out / "rollout.gif"}
    write_psnr_csv(evaluation, paths["csv"])
    plot_psnr(evaluation, paths["plot"], title)
    write_gif(evaluation, video, paths["gif"])
    return paths


def summary_line(evaluation: Evaluation) -> str:
    return (
        f"average PSNR over frames 1-{len(evaluation.psnr) - 1}: {evaluation.average:.2f} dB "
        f"(copy-the-first-frame baseline: {evaluation.baseline_average:.2f} dB, "
        f"{evaluation.average - evaluation.baseline_average:+.2f} dB)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cvae_dist.evaluate",
        description="Roll the validation video out from its first frame and score each frame (PSNR).",
    )
    parser.add_argument("--ckpt", required=True, help="a run folder (uses its best weights), checkpoint folder or model.safetensors")
    parser.add_argument("--DR", help="dataset root in the course layout (default: the one the checkpoint was trained on)")
    parser.add_argument("--out", required=True, help="folder for psnr_per_frame.csv, psnr_per_frame.png and rollout.gif")
    parser.add_argument("--val_vi_len", type=int, default=None, help="frames to roll out (default: the whole video)")
    parser.add_argument("--z", choices=["prior", "mean"], default="prior", help="draw z from N(0,I), or use its mean (default: prior)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior's noise (default: 0)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda if available)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from cvae_dist.checkpoint import load_model
        from cvae_dist.data import dataset_root
        from cvae_dist.data.course import CourseDataset

        model, config = load_model(args.ckpt, args.device)
        if args.DR is not None:
            config.data.DR = args.DR
        dataset = CourseDataset(dataset_root(config.data), config.data.frame_H, config.data.frame_W)
        video = dataset.val()
        evaluation = evaluate_video(model, video, args.device, args.val_vi_len, seed=args.seed, z=args.z)
        paths = write_evaluation(evaluation, video, args.out)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_line(evaluation))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

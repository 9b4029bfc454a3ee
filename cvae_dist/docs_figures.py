"""The figures of the docs, drawn from the package's own schedules and the demo run's outputs.

python -m cvae_dist.docs_figures schedules --out docs/figures
    beta per epoch (kl_beta.png) and the teacher-forcing ratio per epoch (teacher_forcing.png),
    computed by `KLAnnealer` and `teacher_forcing_ratio`, so the figures cannot drift from the code.
python -m cvae_dist.docs_figures demo --run runs/demo --out docs/images
    the README's picture: the demo's PSNR per frame (demo_psnr.png) and a strip of its
    rollout, prediction | truth | pose at a few frames (demo_frames.png).
python -m cvae_dist.docs_figures data --root data/synthetic-6400 --out docs/images
    a dataset's validation video at a few frames: as stored, as a model sees it (32x64),
    and its pose label (dataset_frames.png).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from matplotlib.figure import Figure

from cvae_dist.config import MethodConfig, TrainConfig
from cvae_dist.errors import ArgumentParser, UserError, output_folder, run_command
from cvae_dist.schedules import KLAnnealer, teacher_forcing_coin, teacher_forcing_ratio

COURSE_METHOD, COURSE_TRAIN = MethodConfig(), TrainConfig()
EPOCHS = COURSE_TRAIN.num_epoch


@dataclass(frozen=True)
class TeacherForcing:
    """One teacher-forcing schedule: the course's three flags."""

    tfr: float
    tfr_sde: int
    tfr_d_step: float

    def ratio(self, epoch: int) -> float:
        return teacher_forcing_ratio(epoch, self.tfr, self.tfr_sde, self.tfr_d_step)


# Each panel of kl_beta.png: its title and the annealer it draws, over the course's 70 epochs.
BETA_CURVES: dict[str, KLAnnealer] = {
    f"Cyclical, {COURSE_METHOD.kl_anneal_cycle} cycles, ratio {COURSE_METHOD.kl_anneal_ratio} (course default)": KLAnnealer(
        COURSE_METHOD.kl_anneal_type, EPOCHS, COURSE_METHOD.kl_anneal_cycle, COURSE_METHOD.kl_anneal_ratio
    ),
    "Cyclical, 4 cycles, ratio 0.5": KLAnnealer("Cyclical", EPOCHS, 4, 0.5),
    "Cyclical, 2 cycles, ratio 0.25": KLAnnealer("Cyclical", EPOCHS, 2, 0.25),
    "Monotonic, ratio 1.0": KLAnnealer("Monotonic", EPOCHS, 1, 1.0),
    "Monotonic, ratio 0.25": KLAnnealer("Monotonic", EPOCHS, 1, 0.25),
    "Without (beta = 1)": KLAnnealer("Without", EPOCHS, 1, 1.0),
}

# The lines of teacher_forcing.png: a label and the schedule it draws.
TF_CURVES: dict[str, TeacherForcing] = {
    f"course default: --tfr {COURSE_METHOD.tfr} --tfr_sde {COURSE_METHOD.tfr_sde} --tfr_d_step {COURSE_METHOD.tfr_d_step}": TeacherForcing(
        COURSE_METHOD.tfr, COURSE_METHOD.tfr_sde, COURSE_METHOD.tfr_d_step
    ),
    "--tfr 1.0 --tfr_sde 0 --tfr_d_step 0.02": TeacherForcing(1.0, 0, 0.02),
    "--tfr 1.0 --tfr_sde 30 --tfr_d_step 0.05": TeacherForcing(1.0, 30, 0.05),
    "--tfr 0.5 --tfr_sde 0 --tfr_d_step 0.0": TeacherForcing(0.5, 0, 0.0),
    "--tfr 0 (teacher forcing off)": TeacherForcing(0.0, 0, 0.0),
}
# The PNG text key under which a figure stores `series_digest` of what it plots.
SERIES_KEY = "Series-SHA256"
COIN_LABEL = "course default, --tfr_coin epoch: the coin each epoch throws (seed 0)"


def plotted_series(figure: Figure) -> dict[str, np.ndarray]:
    """Every labelled line of a figure -> the y values it shows, read back from matplotlib."""
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for axes in figure.axes for line in axes.lines}


def series_digest(figure: Figure) -> str:
    """A hash of every value a figure plots, written into its PNG so a stale figure can be told apart."""
    series = {label: [round(float(v), 9) for v in values] for label, values in sorted(plotted_series(figure).items())}
    return hashlib.sha256(json.dumps(series).encode()).hexdigest()


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> None:
    figure.savefig(path, dpi=dpi, metadata={"Software": "python -m cvae_dist.docs_figures", SERIES_KEY: series_digest(figure)})


def beta_figure(curves: dict[str, KLAnnealer] = BETA_CURVES, epochs: int = EPOCHS) -> Figure:
    """beta per epoch, one panel per annealer; each line is labelled with its panel's title."""
    figure = Figure(figsize=(8, 1.45 * len(curves)), layout="constrained")
    epoch_axis = np.arange(epochs)
    for axes, (label, annealer) in zip(figure.subplots(len(curves), 1, sharex=True), curves.items()):
        axes.plot(epoch_axis, [annealer.beta(e) for e in epoch_axis], drawstyle="steps-post", marker=".", markersize=3, label=label)
        axes.set_title(label, fontsize=9, loc="left")
        axes.set(ylim=(-0.05, 1.1), ylabel="beta")
        axes.grid(alpha=0.3)
    axes.set_xlabel("epoch (beta is set at the start of each epoch; --kl_anneal_unit step anneals per optimizer step instead)")
    figure.suptitle(f"KL weight beta per epoch over {epochs} epochs (cvae_dist.schedules.KLAnnealer)", fontsize=10)
    return figure


def teacher_forcing_figure(curves: dict[str, TeacherForcing] = TF_CURVES, epochs: int = EPOCHS, seed: int = 0) -> Figure:
    """The teacher-forcing ratio per epoch for each schedule, and the course default's coin per epoch."""
    figure = Figure(figsize=(8, 5.2), layout="constrained")
    axes, coin_axes = figure.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    epoch_axis = np.arange(epochs)
    for label, schedule in curves.items():
        axes.plot(epoch_axis, [schedule.ratio(e) for e in epoch_axis], drawstyle="steps-post", linewidth=1.4, label=label)
    axes.set(ylabel="teacher-forcing ratio", ylim=(-0.05, 1.05), xlim=(0, epochs))
    axes.set_title("Teacher-forcing ratio per epoch (cvae_dist.schedules.teacher_forcing_ratio)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper right")
    default = next(iter(curves.values()))
    coins = [float(teacher_forcing_coin(default.ratio(e), seed, e)) for e in epoch_axis]
    coin_axes.plot(epoch_axis, coins, linestyle="none", marker="o", markersize=3, color="black", label=COIN_LABEL)
    coin_axes.set(xlabel="epoch", yticks=(0, 1), yticklabels=("off", "on"), ylim=(-0.3, 1.3))
    coin_axes.set_title(COIN_LABEL, fontsize=8, loc="left")
    coin_axes.grid(alpha=0.3)
    return figure


def write_schedule_figures(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"beta": out / "kl_beta.png", "teacher_forcing": out / "teacher_forcing.png"}
    save_figure(beta_figure(), paths["beta"])
    save_figure(teacher_forcing_figure(), paths["teacher_forcing"])
    return paths


def frame_strip(gif: str | Path, count: int = 6) -> Figure:
    """`count` evenly spaced frames of an evaluation GIF (each prediction | truth | pose), stacked."""
    frames = iio.imread(gif, index=None)
    picks = np.linspace(1, len(frames) - 1, count).round().astype(int)
    height, width = frames.shape[1:3]
    figure = Figure(figsize=(width / 80 + 0.6, count * height / 80 + 0.5), layout="constrained")
    for axes, t in zip(np.atleast_1d(figure.subplots(count, 1)), picks):
        axes.imshow(frames[t][..., :3], interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_ylabel(f"frame {t}", fontsize=8)
    figure.suptitle("prediction | truth | pose", fontsize=9)
    return figure


def write_demo_images(run_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """The README's picture from a finished run: its PSNR plot, and a strip of its rollout GIF."""
    evaluation = Path(run_dir) / "eval"
    sources = {"psnr": evaluation / "psnr_per_frame.png", "gif": evaluation / "rollout.gif"}
    for path in sources.values():
        if not path.is_file():
            raise UserError(f"--run {run_dir}: no {path.relative_to(run_dir)}; run training to the end first (make demo)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"psnr": out / "demo_psnr.png", "frames": out / "demo_frames.png"}
    shutil.copyfile(sources["psnr"], paths["psnr"])
    frame_strip(sources["gif"]).savefig(paths["frames"], dpi=100)
    return paths


def data_figure(root: str | Path, count: int = 6) -> Figure:
    """`count` evenly spaced frames of a dataset's validation video: as stored, at 32x64, and the label."""
    from cvae_dist.data.course import paired
    from cvae_dist.data.images import read_rgb

    images, labels = paired(Path(root) / "val" / "val_img", Path(root) / "val" / "val_label")
    picks = np.linspace(0, len(images) - 1, count).round().astype(int)
    figure = Figure(figsize=(2.2 * count, 3.6), layout="constrained")
    rows = figure.subplots(3, count, squeeze=False)
    for column, t in enumerate(picks):
        stored = iio.imread(images[t])[..., :3]
        small = read_rgb(images[t], 32, 64).transpose(1, 2, 0)
        for axes, picture in zip(rows[:, column], (stored, small, iio.imread(labels[t])[..., :3])):
            axes.imshow(picture, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
        rows[0, column].set_title(f"frame {t}", fontsize=9)
    for axes, name in zip(rows[:, 0], ("stored", "32x64", "label")):
        axes.set_ylabel(name, fontsize=9)
    figure.suptitle(f"{Path(root).name}: the validation video", fontsize=10)
    return figure


def write_data_image(root: str | Path, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dataset_frames.png"
    data_figure(root).savefig(path, dpi=100)
    return {"frames": path}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m cvae_dist.docs_figures", description="Draw the figures of the docs.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    schedules = commands.add_parser("schedules", help="beta and teacher-forcing ratio per epoch, from cvae_dist.schedules")
    schedules.add_argument(
        "--out", default="docs/figures", type=output_folder, help="folder for kl_beta.png and teacher_forcing.png (default: docs/figures)"
    )
    demo = commands.add_parser("demo", help="the README's picture from a finished run (make demo)")
    demo.add_argument("--run", default="runs/demo", help="the run folder (default: runs/demo)")
    demo.add_argument("--out", default="docs/images", type=output_folder, help="folder for demo_psnr.png and demo_frames.png (default: docs/images)")
    data = commands.add_parser("data", help="frames and labels of a dataset's validation video")
    data.add_argument("--root", default="data/synthetic-6400", help="the dataset, in the course layout (default: data/synthetic-6400)")
    data.add_argument("--out", default="docs/images", type=output_folder, help="folder for dataset_frames.png (default: docs/images)")
    return parser


def _draw(args: argparse.Namespace) -> None:
    if args.command == "schedules":
        paths = write_schedule_figures(args.out)
    elif args.command == "demo":
        paths = write_demo_images(args.run, args.out)
    else:
        paths = write_data_image(args.root, args.out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _draw)


if __name__ == "__main__":
    raise SystemExit(main())

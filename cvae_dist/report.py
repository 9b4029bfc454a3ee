"""The course report's figures, drawn from the TensorBoard events of one or more runs.

    python -m cvae_dist.report RUN_DIR [RUN_DIR ...] --out DIR
    python -m cvae_dist.report LOG_ROOT --out DIR          # every run of a sweep

A folder with the event files of several runs under it (a sweep's LOG_ROOT) stands for all of
them. Writes into DIR:
- `loss_tfr.png`: training loss and teacher-forcing ratio per epoch, epochs that were
  teacher-forced shaded (by the fraction of their batches that were);
- `loss_beta.png`: training loss per logged step with the KL weight beta;
- `val_psnr.png`: validation PSNR per epoch of every run, with the copy-first-frame baseline;
- `psnr_per_frame.png`: PSNR of each validation frame (best weights) of every run in one plot;
- `report.md`: a page embedding them, with a table of each run's settings, status and average
  PSNR, and for runs of one grid point with several seeds, the mean and range over seeds and which
  differences between points exceed that range (see cvae_dist.comparison).

Runs are read with TensorBoard's own EventAccumulator; a run's settings come from the HParams
record its training wrote into the same event file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.metadata import PLUGIN_NAME as HPARAMS_PLUGIN

from cvae_dist.comparison import RunResult, comparison_markdown, figure_labels, figure_styles, run_status, runs_without_events
from cvae_dist.config import hparam_labels
from cvae_dist.errors import ArgumentParser, UserError, output_folder, run_command
from cvae_dist.tracking import EPOCH, FINAL, TB_PROJECT, TRAIN, VAL, read_hparams

FIGURES = {
    "loss_tfr": "Training loss and teacher-forcing ratio per epoch",
    "loss_beta": "Training loss and the KL weight beta per step",
    "val_psnr": "Validation PSNR per epoch",
    "psnr_per_frame": "PSNR per frame of the validation video (best weights)",
}


@dataclass
class RunLog:
    """One run's scalars and settings, as its TensorBoard events hold them."""

    name: str
    settings: dict[str, Any]
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]
    status: str
    label: str = ""
    """How figures name the run (comparison.figure_labels); its name where empty."""
    style: dict[str, str] = field(default_factory=dict)
    """Its curve's colour and line style in figures of several runs (comparison.figure_styles)."""

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a scalar tag; empty arrays where the run never logged it."""
        return self.scalars.get(tag, (np.zeros(0, dtype=int), np.zeros(0)))

    def last(self, tag: str) -> float | None:
        values = self.series(tag)[1]
        return float(values[-1]) if len(values) else None

    def result(self) -> RunResult:
        return RunResult(self.name, self.settings, self.last(FINAL.psnr), self.last(VAL.baseline_psnr), self.status)


def event_folders(run_dir: Path) -> list[Path]:
    """The folders under run_dir (itself included) that hold event files."""
    folders = sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")})
    if not folders:
        raise UserError(f"{run_dir}: no TensorBoard event files in this folder")
    return folders


def read_runs(run_dirs: list[str | Path]) -> list[RunLog]:
    """Every run the folders hold: a run folder is one run; a folder of several runs (a sweep's
    LOG_ROOT) is each of them, and each of its run folders that failed before logging anything."""
    runs = []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run folder not found")
        folders = event_folders(run_dir)
        if len(folders) == 1:
            runs.append(read_run(run_dir, folders[0]))
            continue
        # Accelerate's tracker writes a run's events under <run folder>/tb.
        run_folders = [folder.parent if folder.name == TB_PROJECT else folder for folder in folders]
        sweep = [read_run(run, folder, name=str(run.relative_to(run_dir))) for run, folder in zip(run_folders, folders)]
        failed = runs_without_events(run_dir, {run.name for run in sweep})
        runs += sorted(sweep + [RunLog(name, {}, {}, status) for name, status in failed.items()], key=lambda run: run.name)
    return runs


def read_run(run_dir: Path, events: Path, name: str | None = None) -> RunLog:
    """One run from the folder of its event files (`events`, in or under its run folder `run_dir`)."""
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        values = accumulator.Scalars(tag)
        scalars[tag] = (np.array([e.step for e in values]), np.array([e.value for e in values]))
    try:
        content = accumulator.PluginTagToContent(HPARAMS_PLUGIN)
    except KeyError:  # a run written without its HParams record
        content = {}
    status = run_status(run_dir, evaluated=FINAL.psnr in scalars)
    return RunLog(name=name or run_dir.name, settings=read_hparams(content), scalars=scalars, status=status)


def _run_rows(runs: list[RunLog], title: str) -> tuple[Figure, list]:
    figure = Figure(figsize=(8, 2.4 * len(runs) + 0.6), layout="constrained")
    axes = figure.subplots(len(runs), 1, squeeze=False)[:, 0]
    figure.suptitle(title)
    return figure, list(axes)


def plot_loss_tfr(runs: list[RunLog], path: Path) -> None:
    figure, rows = _run_rows(runs, FIGURES["loss_tfr"])
    for axes, run in zip(rows, runs):
        epochs, loss = run.series(EPOCH.loss)
        for epoch, forced in zip(*run.series(EPOCH.teacher_forcing)):
            if forced > 0:
                axes.axvspan(epoch - 0.5, epoch + 0.5, color="tab:orange", alpha=0.35 * forced, linewidth=0)
        axes.plot(epochs, loss, marker="o", color="tab:blue", label="loss")
        axes.set(ylabel="loss", title=run.label or run.name)
        axes.set_yscale("log")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs):  # every panel spans whole epochs, shaded or not, so that they line up
            axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ratio = axes.twinx()
        ratio.plot(*run.series(EPOCH.tfr), drawstyle="steps-mid", marker="s", color="tab:green", label="tfr")
        ratio.set(ylabel="teacher-forcing ratio", ylim=(-0.05, 1.05))
        handles = [*axes.get_legend_handles_labels()[0], *ratio.get_legend_handles_labels()[0]]
        handles.append(Patch(color="tab:orange", alpha=0.35, label="teacher forcing on (shade: share of batches)"))
        axes.legend(handles=handles, loc="upper right", fontsize="small")
    rows[-1].set_xlabel("epoch")
    figure.savefig(path, dpi=110)


def plot_loss_beta(runs: list[RunLog], path: Path) -> None:
    figure, rows = _run_rows(runs, FIGURES["loss_beta"])
    for axes, run in zip(rows, runs):
        axes.plot(*run.series(TRAIN.loss), color="tab:blue", linewidth=1.0, label="loss")
        axes.set(ylabel="loss", title=run.label or run.name)
        axes.set_yscale("log")
        beta = axes.twinx()
        beta.plot(*run.series(TRAIN.beta), color="tab:red", linewidth=1.2, label="beta")
        beta.set(ylabel="KL weight beta", ylim=(-0.05, 1.05))
        axes.legend(handles=[*axes.get_legend_handles_labels()[0], *beta.get_legend_handles_labels()[0]], loc="upper right", fontsize="small")
    rows[-1].set_xlabel("optimizer step")
    figure.savefig(path, dpi=110)


def plot_val_psnr(runs: list[RunLog], path: Path) -> None:
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots()
    for run in runs:
        axes.plot(*run.series(VAL.psnr), marker="o", label=run.label or run.name, **run.style)
    baseline = next((run.series(VAL.baseline_psnr) for run in runs if len(run.series(VAL.baseline_psnr)[0])), None)
    if baseline is not None:
        axes.axhline(baseline[1][-1], color="grey", linestyle="--", label="copy first frame")
    axes.set(xlabel="epoch", ylabel="average PSNR (dB)", title=FIGURES["val_psnr"])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path, dpi=110)


def plot_psnr_per_frame(runs: list[RunLog], path: Path) -> None:
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    axes = figure.subplots()
    for run in runs:
        frames, psnr = run.series(FINAL.psnr_per_frame)
        if len(frames):
            axes.plot(frames, psnr, linewidth=1.0, label=f"{run.label or run.name} (avg {psnr.mean():.2f} dB)", **run.style)
    axes.set(xlabel="frame", ylabel="PSNR (dB)", title=FIGURES["psnr_per_frame"])
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # runs stopped before their final evaluation have no curve
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path, dpi=110)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown(runs: list[RunLog]) -> str:
    settings = hparam_labels()
    header = [
        "run",
        "status",
        *settings.values(),
        "last logged step",
        "val PSNR per epoch (dB)",
        "avg PSNR (dB)",
        "best val PSNR (dB)",
        "copy-first-frame (dB)",
    ]
    lines = ["# Training report", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        best = run.last(VAL.best_psnr)
        steps = run.series(TRAIN.loss)[0]
        cells = [run.name, run.status, *(_cell(run.settings.get(key)) for key in settings), _cell(int(steps[-1]) if len(steps) else None)]
        cells.append(", ".join(f"{epoch}: {psnr:.2f}" for epoch, psnr in zip(*run.series(VAL.psnr))) or "—")
        cells += [_cell(round(v, 2) if v is not None else None) for v in (run.last(FINAL.psnr), best, run.last(VAL.baseline_psnr))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "avg PSNR: the best weights rolled out over the whole validation video from its first frame (frames 1..T-1).", ""]
    points = comparison_markdown([run.result() for run in runs])
    if points:
        lines += ["## Grid points over seeds", "", "avg PSNR of every seed of each point: its mean and range.", "", points]
    for name, title in FIGURES.items():
        lines += [f"## {title}", "", f"![{title}]({name}.png)", ""]
    return "\n".join(lines)


def write_report(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    runs = read_runs(run_dirs)
    settings = [run.settings for run in runs]
    for run, label, style in zip(runs, figure_labels(settings, [run.name for run in runs]), figure_styles(settings)):
        run.label, run.style = label, style
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_loss_tfr(runs, out / "loss_tfr.png")
    plot_loss_beta(runs, out / "loss_beta.png")
    plot_val_psnr(runs, out / "val_psnr.png")
    plot_psnr_per_frame(runs, out / "psnr_per_frame.png")
    page = out / "report.md"
    page.write_text(markdown(runs))
    return page


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m cvae_dist.report",
        description="Draw the course report's figures (loss, teacher forcing, beta, PSNR) from runs' TensorBoard events, with a Markdown page.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (their --save_root, or --logging_dir if set apart), or a sweep's LOG_ROOT for all of its runs",
    )
    parser.add_argument("--out", required=True, type=output_folder, help="folder for the PNGs and report.md")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _report(args: argparse.Namespace) -> None:
    print(f"wrote {write_report(args.runs, args.out)} and its figures")


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _report)


if __name__ == "__main__":
    raise SystemExit(main())

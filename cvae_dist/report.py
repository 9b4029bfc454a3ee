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

Runs are read with cvae_dist.events (TensorBoard's own EventAccumulator); a run's settings come
from the HParams record its training wrote into the same event file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from cvae_dist import events
from cvae_dist.comparison import RunResult, comparison_markdown, figure_labels, figure_styles
from cvae_dist.config import hparam_labels
from cvae_dist.errors import ArgumentParser, output_folder, run_command
from cvae_dist.events import RunEvents
from cvae_dist.tracking import EPOCH, FINAL, TRAIN, VAL

FIGURES = {
    "loss_tfr": "Training loss and teacher-forcing ratio per epoch",
    "loss_beta": "Training loss and the KL weight beta per step",
    "val_psnr": "Validation PSNR per epoch",
    "psnr_per_frame": "PSNR per frame of the validation video (best weights)",
}


def read_runs(run_dirs: list[str | Path]) -> list[RunEvents]:
    """Every run the folders hold (cvae_dist.events): a run folder is one run; a folder of several
    runs (a sweep's LOG_ROOT) is each of them, and each of its run folders that failed before logging anything."""
    return [run for run_dir in run_dirs for run in events.read_runs(Path(run_dir))]


def labelled(runs: list[RunEvents]) -> list[tuple[RunEvents, str, dict[str, str]]]:
    """Each run with how figures of several runs name and draw it (comparison.figure_labels and figure_styles)."""
    settings = [run.hparams for run in runs]
    return list(zip(runs, figure_labels(settings, [run.name for run in runs]), figure_styles(settings)))


def result(run: RunEvents) -> RunResult:
    return RunResult(run.name, run.hparams, run.last(FINAL.psnr), run.last(VAL.baseline_psnr), run.status)


def _run_rows(runs: list[RunEvents], title: str) -> tuple[Figure, list]:
    figure = Figure(figsize=(8, 2.4 * len(runs) + 0.6), layout="constrained")
    axes = figure.subplots(len(runs), 1, squeeze=False)[:, 0]
    figure.suptitle(title)
    return figure, list(axes)


def plot_loss_tfr(runs: list[RunEvents], path: Path) -> None:
    figure, rows = _run_rows(runs, FIGURES["loss_tfr"])
    for axes, (run, label, _) in zip(rows, labelled(runs)):
        epochs, loss = run.series(EPOCH.loss)
        for epoch, forced in zip(*run.series(EPOCH.teacher_forcing)):
            if forced > 0:
                axes.axvspan(epoch - 0.5, epoch + 0.5, color="tab:orange", alpha=0.35 * forced, linewidth=0)
        axes.plot(epochs, loss, marker="o", color="tab:blue", label="loss")
        axes.set(ylabel="loss", title=label)
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


def plot_loss_beta(runs: list[RunEvents], path: Path) -> None:
    figure, rows = _run_rows(runs, FIGURES["loss_beta"])
    for axes, (run, label, _) in zip(rows, labelled(runs)):
        axes.plot(*run.series(TRAIN.loss), color="tab:blue", linewidth=1.0, label="loss")
        axes.set(ylabel="loss", title=label)
        axes.set_yscale("log")
        beta = axes.twinx()
        beta.plot(*run.series(TRAIN.beta), color="tab:red", linewidth=1.2, label="beta")
        beta.set(ylabel="KL weight beta", ylim=(-0.05, 1.05))
        axes.legend(handles=[*axes.get_legend_handles_labels()[0], *beta.get_legend_handles_labels()[0]], loc="upper right", fontsize="small")
    rows[-1].set_xlabel("optimizer step")
    figure.savefig(path, dpi=110)


def plot_val_psnr(runs: list[RunEvents], path: Path) -> None:
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots()
    for run, label, style in labelled(runs):
        axes.plot(*run.series(VAL.psnr), marker="o", label=label, **style)
    baseline = next((run.series(VAL.baseline_psnr) for run in runs if len(run.series(VAL.baseline_psnr)[0])), None)
    if baseline is not None:
        axes.axhline(baseline[1][-1], color="grey", linestyle="--", label="copy first frame")
    axes.set(xlabel="epoch", ylabel="average PSNR (dB)", title=FIGURES["val_psnr"])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path, dpi=110)


def plot_psnr_per_frame(runs: list[RunEvents], path: Path) -> None:
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    axes = figure.subplots()
    for run, label, style in labelled(runs):
        frames, psnr = run.series(FINAL.psnr_per_frame)
        if len(frames):
            axes.plot(frames, psnr, linewidth=1.0, label=f"{label} (avg {psnr.mean():.2f} dB)", **style)
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


def markdown(runs: list[RunEvents]) -> str:
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
        cells = [run.name, run.status, *(_cell(run.hparams.get(key)) for key in settings), _cell(int(steps[-1]) if len(steps) else None)]
        cells.append(", ".join(f"{epoch}: {psnr:.2f}" for epoch, psnr in zip(*run.series(VAL.psnr))) or "—")
        cells += [_cell(round(v, 2) if v is not None else None) for v in (run.last(FINAL.psnr), best, run.last(VAL.baseline_psnr))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "avg PSNR: the best weights rolled out over the whole validation video from its first frame (frames 1..T-1).", ""]
    points = comparison_markdown([result(run) for run in runs])
    if points:
        lines += ["## Grid points over seeds", "", "avg PSNR of every seed of each point: its mean and range.", "", points]
    for name, title in FIGURES.items():
        lines += [f"## {title}", "", f"![{title}]({name}.png)", ""]
    return "\n".join(lines)


def write_report(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    runs = read_runs(run_dirs)
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

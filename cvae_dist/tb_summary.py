"""One table and two figures for a whole sweep, read from its runs' TensorBoard events.

    python -m cvae_dist.tb_summary LOGROOT [--out DIR]

Every folder under LOGROOT with event files is a run (as in `tensorboard --logdir LOGROOT`), and
so is a run folder whose training wrote a failing exit status before it logged anything.
Writes to DIR (default LOGROOT):
  summary.csv          one row per run: every hparam, its status (done, failed, unfinished), best
                       and final validation PSNR, the one-step-ahead PSNR of the best weights (each
                       frame from the true previous frame), steps, epochs, wall time (first to last
                       event, so a requeued run counts its time in the queue)
  summary.md           the same as a Markdown table, with only the hparams that differ between runs;
                       for a sweep with seeds, one row per grid point too (mean and range over seeds)
                       and which differences between points exceed that range (cvae_dist.comparison)
  psnr_per_frame.png   every run's PSNR per frame of the final evaluation
  loss.png             every run's training loss against the optimizer step
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cvae_dist import events
from cvae_dist.comparison import RunResult, comparison_markdown, differing_settings, figure_labels, figure_styles
from cvae_dist.errors import ArgumentParser, output_folder, run_command
from cvae_dist.tracking import EPOCH, FINAL, TRAIN, VAL

RESULT_COLUMNS = ("run", "status", "best_val_psnr", "final_val_psnr", "one_step_psnr", "steps", "epochs", "wall_time_s")


@dataclass
class RunSummary:
    """What one run's events say about it."""

    name: str
    hparams: dict[str, Any]
    status: str
    best_val_psnr: float
    final_val_psnr: float
    one_step_psnr: float
    """One step ahead at the validation with the best rollout: the weights the final evaluation scores."""
    steps: int
    epochs: int
    wall_time_s: float
    baseline_psnr: float | None = None
    psnr_per_frame: list[tuple[int, float]] = field(default_factory=list, repr=False)
    loss: list[tuple[int, float]] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        results = {k: getattr(self, k) for k in RESULT_COLUMNS[1:]}
        return {"run": self.name, **results, **self.hparams}

    def result(self) -> RunResult:
        return RunResult(self.name, self.hparams, self.final_val_psnr, self.baseline_psnr, self.status)


def read_runs(logroot: Path) -> list[RunSummary]:
    """Every run under logroot (cvae_dist.events: the runs TensorBoard's UI would show, and those that failed first)."""
    return [summarize_run(run) for run in events.read_runs(logroot)]


def summarize_run(run: events.RunEvents) -> RunSummary:
    val_epochs, val_psnr = run.series(VAL.psnr)
    best_epoch = val_epochs[val_psnr.argmax()] if len(val_psnr) else None
    one_step = dict(zip(*run.series(VAL.one_step_psnr)))
    final = run.last(FINAL.psnr)
    return RunSummary(
        name=run.name,
        hparams=run.hparams,
        status=run.status,
        best_val_psnr=float(val_psnr.max()) if len(val_psnr) else math.nan,
        final_val_psnr=final if final is not None else (float(val_psnr[-1]) if len(val_psnr) else math.nan),
        one_step_psnr=float(one_step.get(best_epoch, math.nan)),
        steps=int(run.series(TRAIN.loss)[0].max(initial=0)),
        epochs=int(run.series(EPOCH.loss)[0].max(initial=0)),
        wall_time_s=round(run.wall_time_s, 1),
        baseline_psnr=run.last(FINAL.baseline_psnr),
        psnr_per_frame=list(zip(*run.series(FINAL.psnr_per_frame))),
        loss=list(zip(*run.series(TRAIN.loss))),
    )


def varying_hparams(runs: list[RunSummary]) -> list[str]:
    """The settings that differ between runs by design (the CSV keeps them all)."""
    return differing_settings([run.hparams for run in runs])


def write_csv(runs: list[RunSummary], path: Path) -> None:
    rows = [run.row() for run in runs]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(runs: list[RunSummary]) -> str:
    """One row per run; then, for a sweep with seeds, one per grid point and what differs beyond seed noise."""
    columns = [*RESULT_COLUMNS[:1], *varying_hparams(runs), *RESULT_COLUMNS[1:]]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for run in runs:
        row = run.row()
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    table = "\n".join(lines) + "\n"
    points = comparison_markdown([run.result() for run in runs])
    return f"{table}\nGrid points, final PSNR of the best weights over seeds:\n\n{points}" if points else table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def plot_curves(runs: list[RunSummary], attribute: str, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    figure = Figure(figsize=(12, 5), layout="constrained")
    axes = figure.add_subplot()
    settings = [run.hparams for run in runs]
    for run, label, style in zip(runs, figure_labels(settings, [run.name for run in runs]), figure_styles(settings)):
        points = getattr(run, attribute)
        if points:
            axes.plot([x for x, _ in points], [y for _, y in points], label=label, linewidth=1.2, **style)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0] and len(runs) <= 20:  # runs stopped before their final evaluation have no curve
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path, dpi=120)


def summarize(logroot: Path, out: Path) -> list[RunSummary]:
    runs = read_runs(logroot)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out / "summary.csv")
    (out / "summary.md").write_text(markdown_table(runs))
    plot_curves(runs, "psnr_per_frame", "frame", "PSNR (dB)", f"{logroot.name}: PSNR per frame of the best weights", out / "psnr_per_frame.png")
    plot_curves(runs, "loss", "optimizer step", "training loss", f"{logroot.name}: training loss", out / "loss.png")
    return runs


def _summarize(args: argparse.Namespace) -> None:
    out = args.out or args.logroot
    runs = summarize(args.logroot, out)
    print(markdown_table(runs), end="")
    print(f"{len(runs)} run(s); wrote {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'psnr_per_frame.png'}, {out / 'loss.png'}")


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m cvae_dist.tb_summary", description="Summarise every run of a sweep from its TensorBoard events.")
    parser.add_argument("logroot", type=Path, help="folder holding the runs (what you pass to tensorboard --logdir)")
    parser.add_argument("--out", type=output_folder, help="where to write summary.csv, summary.md and the figures (default: LOGROOT)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _summarize)


if __name__ == "__main__":
    raise SystemExit(main())

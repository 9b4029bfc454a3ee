"""The runs of a sweep grouped by grid point: the mean and spread of their PSNR over seeds, which
differences between points exceed that spread, and where each run stands.

A grid point is a run's settings less its seed and its bookkeeping (where it writes, how often).
With a handful of seeds a point's spread is the range of its seeds' scores, and a difference
between two points counts only where the ranges do not overlap: every seed of one point beats
every seed of the other. `python -m cvae_dist.tb_summary` and `python -m cvae_dist.report` print it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from statistics import fmean
from typing import Any

from cvae_dist.config import hparam_labels, is_bookkeeping, options
from cvae_dist.schedules import inert_settings
from cvae_dist.train import EXIT_REQUEUE

SEED = "seed"
DONE = "done"
UNFINISHED = "unfinished"
# Written by cvae_dist/train.py into the run folder when slurm/common.sh asks for it.
STATUS_FILE = "exit_status"
LINE_STYLES = ("-", "--", ":", "-.")
INERT_NOTE = (
    "A dash for a setting: it cannot change that point's runs (the cycles of a Monotonic schedule, or the decay of a "
    "teacher-forcing ratio that stays the same over the run's epochs)."
)


def run_status(run_folder: Path, evaluated: bool) -> str:
    """'done' for a run that logged its final evaluation; 'failed (exit N)' for one whose training
    exited with an error; 'unfinished' otherwise: still training, waiting for its requeue, or
    killed before it could write its status."""
    if evaluated:
        return DONE
    status_file = run_folder / STATUS_FILE
    code = status_file.read_text().strip() if status_file.is_file() else ""
    if code and code not in ("0", str(EXIT_REQUEUE)):
        return f"failed (exit {code})"
    return UNFINISHED


def runs_without_events(logroot: Path, seen: set[str]) -> dict[str, str]:
    """Run folders under logroot, other than those named in `seen`, whose training wrote an exit
    status but no TensorBoard events (it failed before it began): their names -> their status."""
    found = {str(f.parent.relative_to(logroot)): run_status(f.parent, evaluated=False) for f in sorted(logroot.rglob(STATUS_FILE))}
    return {name: status for name, status in found.items() if name not in seen}


@dataclass
class RunResult:
    """What a comparison needs of one run."""

    name: str
    settings: dict[str, Any]
    psnr: float | None
    """Average PSNR of the final evaluation of the best weights (None unless the run is done)."""
    baseline_psnr: float | None
    """Average PSNR of copying the first frame of the same video."""
    status: str


@dataclass
class Point:
    """The runs of one grid point: the same settings but for the seed."""

    settings: dict[str, Any]
    """The settings that set this point apart from the others, in the sweep's order."""
    runs: list[RunResult]
    inert: set[str] = field(default_factory=set)
    """Those of `settings` that cannot change this point's runs (schedules.inert_settings)."""

    @property
    def scores(self) -> list[float]:
        return [run.psnr for run in self.runs if run.status == DONE and run.psnr is not None]

    @property
    def mean(self) -> float:
        return fmean(self.scores)

    @property
    def low(self) -> float:
        return min(self.scores)

    @property
    def high(self) -> float:
        return max(self.scores)

    @property
    def label(self) -> str:
        labels = hparam_labels()
        return ", ".join(f"{labels.get(k, k)} {v}" for k, v in self.settings.items() if k not in self.inert) or "the only point"


def differing_settings(settings: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[str]:
    """The settings whose values differ between runs, in the order `--help` lists them, less
    bookkeeping ones (their folders differ by construction) and those in `skip`."""
    order = {name: i for i, name in enumerate(options())}
    names = sorted(dict.fromkeys(k for one in settings for k in one), key=lambda k: order.get(k, len(order)))
    return [k for k in names if k not in skip and not is_bookkeeping(k) and len({repr(one.get(k)) for one in settings}) > 1]


def figure_labels(settings: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Each run's label in a figure: the settings that set it apart from the others and can change
    it, such as 'KL annealing Cyclical, seed 1', or its name where none do."""
    keys, labels = differing_settings(settings), hparam_labels()
    named = [[k for k in keys if k in one and k not in inert_settings(one)] for one in settings]
    return [", ".join(f"{labels.get(k, k)} {one[k]}" for k in shown) or name for one, shown, name in zip(settings, named, names)]


def figure_styles(settings: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Matplotlib styles for each run's curve: one colour per grid point, one line style per seed
    within it, so that a sweep's figure reads by point."""
    keys = differing_settings(settings, skip=(SEED,))
    points = [repr([one.get(k) for k in keys]) for one in settings]
    colours = {point: f"C{i % 10}" for i, point in enumerate(dict.fromkeys(points))}
    seen: dict[str, int] = {}
    styles = []
    for point in points:
        repeat = seen[point] = seen.get(point, -1) + 1
        styles.append({"color": colours[point], "linestyle": LINE_STYLES[repeat % len(LINE_STYLES)]})
    return styles


def group_points(runs: list[RunResult]) -> list[Point]:
    """The grid points of a sweep's runs, in the order of their first run. Runs without settings
    (failed before they could log them) are left out: nothing says which point they belong to."""
    logged = [run for run in runs if run.settings]
    keys = differing_settings([run.settings for run in logged], skip=(SEED,))
    points: dict[str, Point] = {}
    for run in logged:
        settings = {k: run.settings.get(k) for k in keys}
        if repr(settings) not in points:
            points[repr(settings)] = Point(settings, [], inert_settings(run.settings) & set(keys))
        points[repr(settings)].runs.append(run)
    return list(points.values())


def has_repeats(points: list[Point]) -> bool:
    """Whether any point was run more than once (with several seeds): only then is there a spread."""
    return any(len(point.runs) > 1 for point in points)


def separated_pairs(points: list[Point]) -> list[tuple[Point, Point]]:
    """(better, worse) pairs of points with 2 or more finished seeds each where every seed of the
    better one scores above every seed of the worse one, largest difference first."""
    comparable = [p for p in points if len(p.scores) >= 2]
    pairs = []
    for a, b in combinations(comparable, 2):
        better, worse = (a, b) if a.mean >= b.mean else (b, a)
        if better.low > worse.high:
            pairs.append((better, worse))
    return sorted(pairs, key=lambda pair: pair[1].mean - pair[0].mean)


def _spread(point: Point) -> str:
    return f"{point.low:.2f} to {point.high:.2f}"


def points_table(points: list[Point]) -> str:
    """One Markdown row per grid point: its settings, seeds done, mean and range of the final PSNR."""
    keys = list(points[0].settings) if points else []
    labels = hparam_labels()
    header = [*(labels.get(k, k) for k in keys), "seeds done", "mean PSNR (dB)", "range (dB)", "per seed", "copy first (dB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        done = len(point.scores)
        per_seed = "; ".join(_seed_result(run) for run in point.runs)
        baselines = [run.baseline_psnr for run in point.runs if run.baseline_psnr is not None]
        cells = [
            *("—" if k in point.inert else str(point.settings[k]) for k in keys),
            f"{done} of {len(point.runs)}",
            f"{point.mean:.2f}" if done else "—",
            _spread(point) if done > 1 else "—",
            per_seed,
            f"{fmean(baselines):.2f}" if baselines else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _seed_result(run: RunResult) -> str:
    seed = run.settings.get(SEED, "?")
    return f"seed {seed}: {run.psnr:.2f}" if run.status == DONE and run.psnr is not None else f"seed {seed}: {run.status}"


def findings(points: list[Point]) -> list[str]:
    """Sentences on which differences between points exceed the spread of their seeds."""
    comparable = [p for p in points if len(p.scores) >= 2]
    separated = separated_pairs(points)
    lines = [
        f"{better.label} beats {worse.label} by {better.mean - worse.mean:.2f} dB: every seed of it scores above every seed "
        f"of the other ({_spread(better)} against {_spread(worse)} dB)."
        for better, worse in separated
    ]
    pairs = len(comparable) * (len(comparable) - 1) // 2
    if pairs and not separated:
        lines.append(f"No difference between the {len(comparable)} points exceeds the spread of their seeds: within noise at this budget.")
    elif pairs > len(separated):
        lines.append(f"The other {pairs - len(separated)} of the {pairs} pairs of points overlap: their differences are within seed noise.")
    lacking = [p.label for p in points if len(p.scores) < 2]
    if lacking:
        lines.append(f"Not compared, fewer than 2 seeds done: {'; '.join(lacking)}.")
    return lines


def comparison_markdown(runs: list[RunResult]) -> str:
    """The points table and the findings, or '' for a set of runs with no repeated point."""
    points = group_points(runs)
    if not has_repeats(points):
        return ""
    lines = [points_table(points)]
    if any(point.inert for point in points):
        lines.append(f"{INERT_NOTE}\n")
    lines += [f"- {line}" for line in findings(points)]
    return "\n".join(lines) + "\n"

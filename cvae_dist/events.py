"""Runs' TensorBoard events, read with TensorBoard's own EventAccumulator: scalars by tag, the
HParams record, and which folders hold runs (as `tensorboard --logdir` lists them).

`python -m cvae_dist.tb_summary`, `python -m cvae_dist.report` and benchmarks/gpu_check.py read
runs through here, so that a run means the same to each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator, ScalarEvent
from tensorboard.plugins.hparams.metadata import PLUGIN_NAME as HPARAMS_PLUGIN

from cvae_dist.comparison import run_status, runs_without_events
from cvae_dist.errors import UserError
from cvae_dist.tracking import FINAL, TB_PROJECT, read_hparams

EVENT_FILES = "events.out.tfevents.*"


@dataclass
class RunEvents:
    """One run's scalars and settings, as its event files hold them."""

    name: str
    folder: Path
    """The run folder (its --save_root): where its exit status and checkpoints are."""
    scalars: dict[str, list[ScalarEvent]] = field(default_factory=dict)
    """Every event of every scalar tag, in the order written: (wall_time, step, value)."""
    hparams: dict[str, Any] = field(default_factory=dict)
    """The settings of its HParams record (empty for a run written without one)."""
    first_event_time: float = math.nan

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a scalar tag; empty arrays where the run never logged it."""
        events = self.scalars.get(tag, [])
        return np.array([e.step for e in events], dtype=int), np.array([e.value for e in events], dtype=float)

    def last(self, tag: str) -> float | None:
        events = self.scalars.get(tag)
        return events[-1].value if events else None

    @property
    def wall_time_s(self) -> float:
        """First event to last scalar: a requeued run counts its time in the queue."""
        return max((e.wall_time for events in self.scalars.values() for e in events), default=math.nan) - self.first_event_time

    @property
    def status(self) -> str:
        return run_status(self.folder, evaluated=FINAL.psnr in self.scalars)


def read_events(events: Path, folder: Path, name: str) -> RunEvents:
    """The run whose event files are in the folder `events` (all of them: a resumed run adds one)."""
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    scalars = {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}
    try:
        hparams = read_hparams(accumulator.PluginTagToContent(HPARAMS_PLUGIN))
    except KeyError:  # a run written without its HParams record
        hparams = {}
    return RunEvents(name, folder, scalars, hparams, accumulator.FirstEventTimestamp())


def read_run(folder: Path) -> RunEvents:
    """The run trained into `folder`; without scalars where it has logged nothing yet."""
    events = folder / TB_PROJECT  # Accelerate's tracker writes under <run folder>/<project>
    if not any(events.glob(EVENT_FILES)):
        return RunEvents(folder.name, folder)
    return read_events(events, folder, folder.name)


def read_runs(root: Path) -> list[RunEvents]:
    """Every run under `root` (itself included), sorted by name: each folder with event files, and
    each run folder whose training wrote a failing exit status before it logged anything. A run is
    named by its run folder's path under `root`, or by its own name where it is `root` itself."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    runs = []
    for events in sorted({path.parent for path in root.rglob(EVENT_FILES)}):
        folder = events.parent if events.name == TB_PROJECT and events != root else events
        runs.append(read_events(events, folder, _run_name(root, folder)))
    failed = runs_without_events(root, {str(run.folder.relative_to(root)) for run in runs})
    runs += [RunEvents(_run_name(root, root / name), root / name) for name in failed]
    if not runs:
        raise UserError(f"{root}: no TensorBoard event files under it")
    return sorted(runs, key=lambda run: run.name)


class ScalarFollower:
    """One scalar of a run that is still training: each `read` takes in only the events written since the last."""

    def __init__(self, folder: Path, tag: str):
        self.events, self.tag = folder / TB_PROJECT, tag
        self.accumulator: EventAccumulator | None = None

    def read(self) -> dict[int, float]:
        """step -> value, the latest write of each step (a resumed run may log a step again)."""
        if self.accumulator is None:
            if not self.events.is_dir():
                return {}
            # Kept between reads: each Reload reads only what was appended. Images and tensors are not needed here.
            self.accumulator = EventAccumulator(str(self.events), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
        self.accumulator.Reload()
        if self.tag not in self.accumulator.Tags().get("scalars", []):
            return {}
        return {event.step: event.value for event in self.accumulator.Scalars(self.tag)}


def _run_name(root: Path, folder: Path) -> str:
    return root.name if folder == root else str(folder.relative_to(root))

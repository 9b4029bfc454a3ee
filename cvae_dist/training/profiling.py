"""--profile_steps: torch.profiler over a few optimizer steps, a trace to open in Perfetto and the top operators.

The first steps of a run pay for warm-up (the allocator, cuDNN's autotuning, the loader's first
batches), so profiling starts after --profile_wait steps and one more step the profiler itself
discards. Only the main process profiles: under DDP the others run the same kernels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

TRACE = "trace.json.gz"
"""Chrome trace format, gzipped: https://ui.perfetto.dev and chrome://tracing open it as it is."""
TABLE = "top_ops.txt"
TOP_ROWS = 20


class StepProfiler:
    """A context over the training epochs; `step()` after every optimizer step. Does nothing when `steps` is 0."""

    def __init__(self, folder: Path, steps: int, wait: int, device: torch.device):
        self.folder, self.steps, self.wait, self.device = folder, steps, wait, device
        self.profiler: torch.profiler.profile | None = None
        self.stepped = 0

    def __enter__(self) -> StepProfiler:
        if self.steps:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            schedule = torch.profiler.schedule(wait=self.wait, warmup=1, active=self.steps, repeat=1)
            self.profiler = torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=self._write)
            self.profiler.__enter__()
        return self

    def step(self) -> None:
        if self.profiler is not None:
            self.profiler.step()
            self.stepped += 1

    def __exit__(self, *exc) -> None:
        if self.profiler is None:
            return
        # Stopping in the middle of the active steps still writes what was recorded (torch calls on_trace_ready).
        self.profiler.__exit__(*exc)
        if exc[0] is None and self.stepped <= self.wait:
            tqdm.write(f"profiler: the run ended after {self.stepped} steps, before profiling began (--profile_wait {self.wait})")

    def _write(self, profiler: torch.profiler.profile) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(self.folder / TRACE))
        sort_by = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=sort_by, row_limit=TOP_ROWS)
        (self.folder / TABLE).write_text(table + "\n")
        tqdm.write(f"profiler: {self.steps} steps after {self.wait} (+1 warm-up); trace {self.folder / TRACE}\n{table}")

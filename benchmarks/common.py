"""What the benchmark scripts share: rows and their tables, timing a call, the machine they ran on,
and running cvae_dist's commands in processes of their own under a time budget."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 2**20


# ---- rows and tables ------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    name: str
    frames_per_s: float | None = None
    seconds: float | None = None
    """Median seconds of one repeat (a step, a pass over the data, a rollout)."""
    peak_mib: float | None = None
    notes: dict = field(default_factory=dict)
    skipped: str | None = None
    """Why the row was not measured; it then has no figures."""


def table(rows: list[Row], summary: dict[str, float] | None = None) -> str:
    """The rows as a fixed-width table (`*` marks cvae_dist's best setting), then the summary's figures."""
    lines = [f"{'section':8s}  {'what':78s} {'frames/s':>10s} {'ms/repeat':>10s} {'peak MiB':>9s}"]
    for r in rows:
        what = f"{r.section:8s}  {r.name + (' *' if r.notes.get('best') else ''):78s}"
        if r.skipped:
            lines.append(f"{what} skipped: {r.skipped}")
            continue
        peak = "" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        lines.append(f"{what} {r.frames_per_s:>10,.0f} {r.seconds * 1000:>10,.1f} {peak:>9s}")
    lines += [f"{key}: {value:,.3g}" for key, value in (summary or {}).items()]
    return "\n".join(lines)


def markdown_table(columns: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; `align` has one letter per column, `r` for right-aligned."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(columns))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [columns, rule, *rows])


# ---- what a bench run's rows say -------------------------------------------------------------

FULL_EPOCH_FRAMES = 23_410  # the course's training video
PRECISIONS = {"fp32": "no", "bf16": "bf16"}  # names in the table -> Accelerate's mixed_precision


def precision_name(precision: str) -> str:
    return next(name for name, value in PRECISIONS.items() if value == precision)


def measured(rows: list[Row], prefix: str = "", **notes) -> list[Row]:
    """The rows with figures whose name starts with `prefix` and whose notes hold `notes`."""
    return [r for r in rows if not r.skipped and r.name.startswith(prefix) and all(r.notes.get(k) == v for k, v in notes.items())]


@functools.cache  # the JSON, and so the summary, is rewritten after every row
def training_flops_per_frame(preset: str, window: int) -> float:
    """FLOPs (multiply-adds count 2) of cvae_dist's forward and backward per predicted frame, counted by PyTorch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cvae_dist.config import PRESETS, ModelConfig
    from cvae_dist.loss import cvae_loss
    from cvae_dist.model import CVAE

    with torch.device("meta"):  # shapes only: counting costs no arithmetic
        model = CVAE(ModelConfig(**PRESETS[preset]))
        frames, labels = torch.rand(1, window, 3, 32, 64), torch.rand(1, window, 3, 32, 64)
        noise = torch.randn(1, window - 1, model.config.N_dim, 32, 64)
    with FlopCounterMode(display=False) as counter:
        out = model(frames, labels, noise, True)
        cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, 1.0).total.backward()
    return counter.get_total_flops() / (window - 1)


def summary(rows: list[Row], preset: str, window: int, peak_tflops: float | None) -> dict:
    """The figures the issue asks for, from the table's rows. The full epoch's time is estimated from
    the best setting with teacher forcing and without (each frame then waits for the one before)."""
    by_name = {r.name: r for r in measured(rows)}
    result = {}
    best = {}
    for tf in ("on", "off"):
        plain = by_name.get(f"plain loop (each frame encoded once), batch 2, fp32, TF {tf}")
        ours = by_name.get(f"cvae_dist, batch 2, fp32, TF {tf}")
        if plain and ours:
            result[f"step_time_ratio_same_computation_tf_{tf}"] = ours.seconds / plain.seconds
        best[tf] = max(measured(rows, best=True, teacher_forcing=tf == "on"), key=lambda r: r.frames_per_s, default=None)
    course = by_name.get("plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on")
    if course and best["on"]:
        result["best_speedup_over_course_loop"] = best["on"].frames_per_s / course.frames_per_s
    cached = [r.frames_per_s for r in measured(rows, "uint8 cache")]
    if cached:
        result["cached_loader_frames_per_s"] = max(cached)
    if best["on"] and window == 16:
        flops = training_flops_per_frame(preset, window)
        predicted_per_epoch = FULL_EPOCH_FRAMES // window * (window - 1)
        result["training_gflop_per_frame"] = flops / 1e9
        result["best_tflops"] = best["on"].frames_per_s * flops / 1e12
        if peak_tflops:
            result["share_of_peak"] = result["best_tflops"] / peak_tflops
        for tf, row in best.items():
            if row:
                result[f"full_epoch_seconds_tf_{tf}"] = predicted_per_epoch / row.frames_per_s
    return result


# ---- timing ---------------------------------------------------------------------------------


def _release_free_memory() -> None:
    # glibc keeps the blocks a step freed for the next one, so the process would enter a step
    # already holding its peak and the peak above the start would read 0. Not done before timed
    # repeats: the step would then pay for faulting the memory in again.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Peak memory of a block above the level at its start: on a GPU the allocator's, on a CPU the
    process's resident memory (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _release_free_memory()
            Path("/proc/self/clear_refs").write_text("5")  # resets the resident peak (VmHWM) to now
            self.start = _rss("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak = max(self.peak, torch.cuda.max_memory_allocated() - self.start)
        else:
            self.peak = max(self.peak, _rss("VmHWM") - self.start)


def time_it(fn, device, warmup: int, repeats: int, memory: bool = True) -> tuple[float, float]:
    """Median seconds of `fn()` over `repeats` calls after `warmup` (on a GPU between CUDA events),
    and the peak memory of one more call in bytes."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    peak = PeakMemory(device)
    if memory:
        with peak:
            fn()
    return statistics.median(times), peak.peak


def machine() -> dict:
    """The CPU, its load, the Python, torch and CUDA versions, and the GPU torch sees (None without one)."""
    import torch

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": None,
    }
    with contextlib.suppress(OSError):
        model_names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = model_names[0] if model_names else info["cpu"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": props.total_memory / 2**30,
            "count": torch.cuda.device_count(),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


# ---- commands in processes of their own ----------------------------------------------------


def repo_env(**extra: str) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH: cvae_dist runs without an install."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra)


def accelerate_launch(config: str, launch_flags: list[str], train_flags: list[str]) -> list[str]:
    """`accelerate launch --config_file accelerate_configs/<config> ... cvae_dist/train.py ...` with this Python."""
    config_file = str(REPO / "accelerate_configs" / config)
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config_file,
        *launch_flags,
        str(REPO / "cvae_dist" / "train.py"),
        *train_flags,
    ]


def run_under_budget(
    command: list[str], log: TextIO, budget: float, env: dict[str, str], watch: Callable[[subprocess.Popen, float], None] | None = None
) -> int | None:
    """Run `command` from the repository with its output going to `log`; its exit status, or None when
    it was stopped at `budget` seconds. `watch(process, elapsed)` runs twice a second meanwhile."""
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    try:
        while process.poll() is None:
            elapsed = time.monotonic() - began
            if elapsed > budget:
                return None
            if watch is not None:
                watch(process, elapsed)
            time.sleep(0.5)
        return process.returncode
    finally:  # also when this process fails: nothing it started outlives it
        if process.poll() is None:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the command and everything it started, SIGKILL to what is left 5 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=5)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc (psutil may be missing)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rsplit(")", 1)[1].split()  # state, parent, ...
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        if int(after_name[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GpuMemoryPeak:
    """The most GPU memory in use while a block runs, sampled by nvidia-smi every half second (MiB).

    From outside the trainer, so it needs no change to it; it includes the CUDA context and the
    blocks PyTorch keeps cached, so it reads higher than torch.cuda.max_memory_allocated."""

    def __init__(self, enabled: bool):
        self.enabled, self.samples, self.process = enabled and shutil.which("nvidia-smi") is not None, [], None

    def __enter__(self) -> GpuMemoryPeak:
        if self.enabled:
            command = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "500"]
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.reader.join(timeout=2)

    @property
    def peak_mib(self) -> int | None:
        return max(self.samples, default=None)


@dataclass
class Outcome:
    returncode: int | None
    """None when the command was stopped at its budget."""
    text: str
    """What the command printed (as kept in the log)."""

    def tail(self, lines: int = 15) -> list[str]:
        # tqdm redraws its bar with carriage returns: each redraw is a line of its own here.
        return [line for line in re.split(r"[\r\n]+", self.text) if line.strip()][-lines:]


def run_logged(
    title: str, command: list[str], log: Path, budget: float, env: dict[str, str], watch: Callable | None = None, keep_bytes: int = MiB
) -> Outcome:
    """`command` under `budget` (run_under_budget), its output appended to `log` after a line naming
    it; past `keep_bytes`, only its first and last lines are kept there."""
    with log.open("a") as handle:
        handle.write(f"==== {title}: $ {' '.join(command)}\n")
        handle.flush()
        start = handle.tell()
        returncode = run_under_budget(command, handle, budget, env, watch)
    return Outcome(returncode, _keep_ends(log, start, keep_bytes))


def _keep_ends(log: Path, start: int, limit: int) -> str:
    """The log's text from byte `start`, cut in the file to its first and last lines where it exceeds `limit` bytes."""
    with log.open("rb+") as handle:
        handle.seek(start)
        written = handle.read()
        if len(written) > limit:
            written = written[: limit // 4] + f"\n[... {len(written) - limit:,} bytes cut ...]\n".encode() + written[-(limit * 3 // 4) :]
            handle.seek(start)
            handle.write(written)
            handle.truncate()
    return written.decode(errors="replace")

"""What the benchmark scripts share: rows and their tables, timing a call, the machine they ran on,
and running cvae_dist's commands in processes of their own under a time budget."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
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
    """The rows as a fixed-width table (`*` marks cvae_dist's best setting), then the summary's figures.
    Where a row counts kernels (notes `kernels`, `kernels_per_frame`), two more columns give them,
    and a third the host's launches where they were counted (on a GPU)."""
    kernels = any("kernels" in r.notes for r in rows)
    launches = any("launches" in r.notes for r in rows)
    lines = [
        f"{'section':8s}  {'what':78s} {'frames/s':>10s} {'ms/repeat':>10s} {'peak MiB':>9s}"
        + (f" {'kernels':>8s} {'/frame':>7s}" if kernels else "")
        + (f" {'launches':>8s}" if launches else "")
    ]
    for r in rows:
        what = f"{r.section:8s}  {r.name + (' *' if r.notes.get('best') else ''):78s}"
        if r.skipped:
            lines.append(f"{what} skipped: {r.skipped}")
            continue
        rate = "" if r.frames_per_s is None else f"{r.frames_per_s:,.0f}"
        ms = "" if r.seconds is None else f"{r.seconds * 1000:,.1f}"
        peak = "" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        line = f"{what} {rate:>10s} {ms:>10s} {peak:>9s}"
        if "kernels" in r.notes:
            line += f" {r.notes['kernels']:>8,d} {r.notes['kernels_per_frame']:>7,.0f}"
        if "launches" in r.notes:
            line += f" {r.notes['launches']:>8,d}"
        lines.append(line.rstrip())
    lines += [f"{key}: {value:,d}" if isinstance(value, int) else f"{key}: {value:,.3g}" for key, value in (summary or {}).items()]
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


# ---- what a training step launches and moves -------------------------------------------------

# Ops that allocate or change only a tensor's metadata: no kernel runs, on any device.
NO_KERNEL_OPS = frozenset(
    "empty empty_like empty_strided new_empty new_empty_strided resize_ resize_as_ _resize_output_ as_strided_ set_ _unsafe_view "
    "detach_ squeeze_ unsqueeze_ transpose_ t_ swapdims_ record_stream".split()
)
# Ops that fill or copy memory (and do it through another of these when they call one).
COPY_OPS = frozenset(
    "copy_ fill_ zero_ clone _to_copy _copy_from _copy_from_and_resize lift_fresh_copy zeros ones full zeros_like ones_like full_like "
    "new_zeros new_ones new_full scalar_tensor".split()
)
_DISPATCHER_OP = re.compile(r"\w+::\w+")
_INDUCTOR_CPP_KERNEL = re.compile(r"(graph_\d+_)?cpp_\w+")  # what inductor names its C++ kernels in the profiler
KERNEL_TARGET = 0.25
"""The reduction aimed at: the compiled model (forward and backward) launches at most this share of the eager one's kernels, TF off."""


def _aliases_only(schema) -> bool:
    return bool(schema.returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


@functools.cache
def launches_no_kernel(op: str) -> bool:
    """Whether the dispatcher op `op` ('aten::view') runs no kernel: it only allocates or changes
    metadata (NO_KERNEL_OPS), or every overload of it that returns tensors returns views of its
    inputs without writing them (the schema's `Tensor(a)`: view, reshape when no copy is needed,
    as_strided, expand, transpose, split, detach, to/contiguous when already so, ...)."""
    import torch

    namespace, _, name = op.partition("::")
    if namespace == "aten" and name in NO_KERNEL_OPS:
        return True
    schemas = [s for s in torch._C._jit_get_schemas_for_operator(op) if any("Tensor" in str(r.type) for r in s.returns)]
    return bool(schemas) and all(_aliases_only(s) for s in schemas)


PHASES = ("forward", "backward", "after_backward", "optimizer")
"""A step's parts: `forward` (noise, forward pass, loss, backward's seed gradient), `backward`, `after_backward` (gradient
clipping, the non-finite check, zero_grad) and `optimizer` (inside Optimizer.step)."""


def _phase(event, backward_starts: float) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("autograd::engine::evaluate_function"):
            return "backward"
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    return "forward" if event.time_range.start < backward_starts else "after_backward"


def _backward_starts(events) -> float:
    return min((e.time_range.start for e in events if e.name.startswith("autograd::engine::evaluate_function")), default=math.inf)


def cpu_kernels(events) -> dict[str, int]:
    """The kernels among profiler `events` (torch.profiler's `events()`) by PHASES, `model` (forward
    and backward: what --compile compiles) and `total`.

    On a CPU a kernel is a dispatcher op (`aten::add`, `mkldnn::...`) that `counts_itself`, and each
    C++ kernel that inductor generated, which the profiler lists (as `graph_<n>_cpp_fused_...`)
    only when torch._inductor.config.cpp.enable_kernel_profile was set when it was compiled. Each is
    about one launch on a GPU: a GPU op may launch a few kernels (cuDNN's convolutions), and the
    optimizer's per-tensor ops on a CPU (its foreach ops loop over the tensors there) are a few
    fused kernels on a GPU (cvae_dist's Adam is fused there)."""
    backward_starts = _backward_starts(events)
    counts = dict.fromkeys(PHASES, 0)
    for event in events:
        if counts_itself(event) if _DISPATCHER_OP.fullmatch(event.name) else _INDUCTOR_CPP_KERNEL.fullmatch(event.name):
            counts[_phase(event, backward_starts)] += 1
    return _with_totals(counts)


def counts_itself(event) -> bool:
    """Whether the op of a profiler event is a kernel of its own: not one that `launches_no_kernel`,
    and either a leaf (it calls no op but views and allocations), or one that calls nothing but
    COPY_OPS (aten::addmm copying the bias into its output, then multiplying) and is not one of
    them. An op that calls others to do its work (aten::linear, aten::convolution, a copy through
    aten::copy_, a foreach op looping over tensors) is not: what it calls is counted."""
    if launches_no_kernel(event.name):
        return False
    working = [c.name for c in _op_children(event) if not launches_no_kernel(c.name)]
    if not working:
        return True
    return event.name.partition("::")[2] not in COPY_OPS and all(c.partition("::")[2] in COPY_OPS for c in working)


def _op_children(event):
    """The ops `event` calls directly (also through record_functions in between)."""
    for child in event.cpu_children:
        if _DISPATCHER_OP.fullmatch(child.name):
            yield child
        else:
            yield from _op_children(child)


def _with_totals(counts: dict[str, int]) -> dict[str, int]:
    return {**counts, "model": counts["forward"] + counts["backward"], "total": sum(counts.values())}


# The runtime and driver calls by which the host puts work on a GPU: one kernel each, or one whole CUDA graph.
LAUNCH_CALLS = frozenset(
    {"cudaLaunchKernel", "cudaLaunchKernelExC", "cudaLaunchCooperativeKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch"}
)


def cuda_kernels(events) -> dict[str, int]:
    """The CUDA kernels among profiler `events` (memory copies and sets not counted), by PHASES of
    the CPU op that launched each (`unattributed`: those the profiler linked to none), `model` and
    `total`; and `launches`, the host's LAUNCH_CALLS, which a CUDA graph's replay makes one of for
    all the kernels it runs (they are still counted as kernels)."""
    from torch.autograd import DeviceType

    backward_starts = _backward_starts(events)
    counts = dict.fromkeys(PHASES, 0)
    recorded = 0  # the kernels themselves, also those no CPU event claims
    for event in events:
        if event.device_type == DeviceType.CPU:
            launched = sum(1 for k in event.kernels if not k.name.startswith(("Memcpy", "Memset")))
            if launched:
                counts[_phase(event, backward_starts)] += launched
        elif event.device_type == DeviceType.CUDA and (getattr(event, "activity_type", None) or "kernel") == "kernel":
            recorded += not event.name.startswith(("Memcpy", "Memset"))
    counts["unattributed"] = max(0, recorded - sum(counts.values()))
    launches = sum(1 for event in events if event.device_type == DeviceType.CPU and event.name in LAUNCH_CALLS)
    return {**_with_totals(counts), "launches": launches}


def count_kernels(fn, device) -> dict[str, dict[str, int]]:
    """The kernels one call of `fn()` launches: `cpu` (cpu_kernels' definition, on any device) and,
    on a GPU, `cuda` (cuda_kernels: the CUDA kernels the profiler saw, after synchronizing)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    on_gpu = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with profile(activities=activities) as prof:
        fn()
        if on_gpu:
            torch.cuda.synchronize()
    events = prof.events()
    counts = {"cpu": cpu_kernels(events)}
    if on_gpu:
        counts["cuda"] = cuda_kernels(events)
    return counts


def bytes_moved_mode():
    """A TorchDispatchMode whose `.bytes` sums the bytes of the tensors each op reads and writes:
    every op's tensor inputs and outputs, but for ops that `launches_no_kernel`. An upper estimate
    of the memory traffic of running the ops one by one (eager, unfused: every intermediate goes
    through memory once written and once per read; caches and fusion make the real traffic lower)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class BytesMoved(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not (_aliases_only(func._schema) or (func.namespace == "aten" and func._schema.name.split("::")[-1] in NO_KERNEL_OPS)):
                self.bytes += sum(t.nbytes for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor))
            return out

    return BytesMoved()


@functools.cache
def training_bytes_per_frame(preset: str, window: int, precision: str = "no", batch: int = 1) -> float:
    """Bytes that cvae_dist's forward and backward (teacher forcing on; the optimizer step not
    counted) read and write per predicted frame, at `batch` windows (the weights are read once per
    batch), counted as `bytes_moved_mode` says: an eager, unfused upper estimate.

    Counted on fake CPU tensors (shapes only, like the FLOPs) under CPU autocast at the row's
    precision ('bf16': convolutions and what follows them move 2-byte activations; the loss,
    the weights' float32 copies and their gradients stay 4-byte). A GPU's autocast casts by lists
    of its own that differ in a few ops from the CPU's: a close approximation there."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from cvae_dist.config import PRESETS, ModelConfig
    from cvae_dist.loss import cvae_loss
    from cvae_dist.model import CVAE

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with FakeTensorMode():
        model = CVAE(ModelConfig(**PRESETS[preset]))
        frames, labels = torch.rand(batch, window, 3, 32, 64), torch.rand(batch, window, 3, 32, 64)
        noise = torch.randn(batch, window - 1, model.config.N_dim, 32, 64)
        with bytes_moved_mode() as counter:
            with torch.autocast("cpu", dtype=half or torch.bfloat16, enabled=half is not None):
                out = model(frames, labels, noise, True)
            cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, 1.0).total.backward()
    return counter.bytes / (batch * (window - 1))


# Peak memory bandwidth in GB/s (NVIDIA's datasheets), by the name torch reports; the first entry the name contains wins.
PEAK_GBPS = (("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("H200", 4800.0))


def peak_bandwidth_gbps(gpu_name: str) -> float | None:
    return next((peak for key, peak in PEAK_GBPS if key in gpu_name), None)


# ---- out of memory ----------------------------------------------------------------------------

# What libraries report when they cannot get memory, short of PyTorch's own OutOfMemoryError: cuDNN
# finds no engine (no algorithm's workspace fits: "GET/FIND was unable to find an engine", "no valid
# execution plans", CUDNN_STATUS_NOT_SUPPORTED) or fails to allocate; cuBLAS cannot create a handle
# or its workspace; and CUDA or the CPU allocator themselves.
OUT_OF_MEMORY_MESSAGES = (
    "out of memory",
    "unable to find an engine",
    "no valid execution plans",
    "CUDNN_STATUS_NOT_SUPPORTED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_NOT_INITIALIZED",
    "DefaultCPUAllocator: can't allocate memory",
)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from (torch.compile wraps what fails inside it), is
    torch.OutOfMemoryError or a RuntimeError with one of OUT_OF_MEMORY_MESSAGES: at a batch that
    fits, cuDNN's and cuBLAS's errors of this kind do not occur, so a sweep takes them for the
    batch not fitting. (CUDNN_STATUS_NOT_SUPPORTED can also mean a layout cuDNN refuses; the
    benchmark's inputs are the same at every batch.)"""
    import torch

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, torch.OutOfMemoryError):
            return True
        if isinstance(err, RuntimeError) and any(message.lower() in str(err).lower() for message in OUT_OF_MEMORY_MESSAGES):
            return True
        err = err.__cause__
    return False


def summary(rows: list[Row], preset: str, window: int, peak_tflops: float | None, peak_gbps: float | None = None) -> dict:
    """The figures the issue asks for, from the table's rows. The full epoch's time is estimated from
    the best setting with teacher forcing and without (each frame then waits for the one before).
    The bytes moved per frame are counted at the best TF-on row's batch and precision."""
    by_name = {r.name: r for r in measured(rows)}
    result = {}
    best = {}
    for tf in ("on", "off"):
        plain = by_name.get(f"plain loop (each frame encoded once), batch 2, fp32, TF {tf}")
        ours = by_name.get(f"cvae_dist, batch 2, fp32, TF {tf}")
        if plain and ours:
            result[f"step_time_ratio_same_computation_tf_{tf}"] = ours.seconds / plain.seconds
        timed = [r for r in measured(rows, best=True, teacher_forcing=tf == "on") if r.frames_per_s]
        best[tf] = max(timed, key=lambda r: r.frames_per_s, default=None)
    course = by_name.get("plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on")
    if course and best["on"]:
        result["best_speedup_over_course_loop"] = best["on"].frames_per_s / course.frames_per_s
    cached = [r.frames_per_s for r in measured(rows, "uint8 cache")]
    if cached:
        result["cached_loader_frames_per_s"] = max(cached)
    if best["on"] and window == 16:
        flops = training_flops_per_frame(preset, window)
        moved = training_bytes_per_frame(preset, window, best["on"].notes["precision"], best["on"].notes["batch"])
        predicted_per_epoch = FULL_EPOCH_FRAMES // window * (window - 1)
        result["training_gflop_per_frame"] = flops / 1e9
        result["best_tflops"] = best["on"].frames_per_s * flops / 1e12
        if peak_tflops:
            result["share_of_peak"] = result["best_tflops"] / peak_tflops
        result["training_mb_moved_per_frame"] = moved / 1e6
        result["best_gbps"] = best["on"].frames_per_s * moved / 1e9
        if peak_gbps:
            result["share_of_peak_bandwidth"] = result["best_gbps"] / peak_gbps
        for tf, row in best.items():
            if row:
                result[f"full_epoch_seconds_tf_{tf}"] = predicted_per_epoch / row.frames_per_s
    result.update(kernel_summary(rows))
    return result


def kernel_summary(rows: list[Row]) -> dict[str, float]:
    """Kernels per step of each measured `kernels` row (by variant and TF: all, and the model's, its
    forward and backward passes), and the compiled model's kernels over the eager model's
    (`compiled_over_eager_model_kernels_tf_*`, which KERNEL_TARGET bounds; `compiled_by_region_...` by region). The optimizer and the
    gradient clipping are the same in both, and far fewer kernels on a GPU (fused) than on a CPU."""
    counted = {(r.notes["variant"], r.notes["teacher_forcing"]): r.notes for r in measured(rows) if r.section == "kernels"}
    result = {}
    for (variant, tf), notes in counted.items():
        key = f"{variant.replace(' ', '_')}_tf_{'on' if tf else 'off'}"
        result[f"kernels_per_step_{key}"] = notes["kernels"]
        result[f"model_kernels_per_step_{key}"] = notes["model_kernels"]
        if "launches" in notes:
            result[f"launches_per_step_{key}"] = notes["launches"]
    for tf in (True, False):
        on_off = "on" if tf else "off"
        for variant in ("compiled", "compiled by region"):
            if ("eager", tf) in counted and (variant, tf) in counted:
                share = counted[variant, tf]["model_kernels"] / counted["eager", tf]["model_kernels"]
                result[f"{variant.replace(' ', '_')}_over_eager_model_kernels_tf_{on_off}"] = share
        if ("eager", tf) in counted and ("CUDA graphs", tf) in counted:
            result[f"graphs_over_eager_launches_tf_{on_off}"] = counted["CUDA graphs", tf]["launches"] / counted["eager", tf]["launches"]
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

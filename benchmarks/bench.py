"""Speed and memory of cvae_dist against a plain course-style loop, on one machine, in one run.

    python benchmarks/bench.py [--device cpu|cuda] [--preset lab|tiny] [--quick] [--batches 2,16,64] [--compile] [--peak_tflops P] [--json OUT]

Prints one table and writes it as JSON. Rows:
  train   frames/s and peak memory of a training step: a plain frame-by-frame loop written the
          way the course's code is (batch 2, fp32), and cvae_dist's real `Loop.train_batch` at
          the same settings and at larger batches and bf16, teacher forcing on and off;
  data    frames/s delivered by the training loader from the uint8 cache, and by a loader that
          decodes the PNGs of every window each time (as the course's dataset does);
  rollout the validation video rolled out from its first frame, and the test sequences
          generated from theirs (batched in cvae_dist, one sequence at a time in the plain loop);
  memory  peak memory of a training step against the window length, with and without
          per-frame activation checkpointing.
"Frames" are predicted frames (B x (T-1) per training step) except in `data` (frames loaded).
Timings: warm-up steps, then several repeats, the median reported; on a GPU each repeat is
bracketed by CUDA events. Peak memory: on a GPU the allocator's peak above what was allocated
before the step; on a CPU the process's peak resident memory above its level before the step.
`--quick` (tiny preset, short windows and rollouts, few repeats) is a smoke run of a minute or two.
A batch size that runs out of GPU memory is listed under `out_of_memory`, and larger ones are
not tried at that precision. `--json` is rewritten after every row, so a run stopped early (as
benchmarks/gpu_check.py stops one at its time budget) still leaves the rows it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 2**20


@dataclass
class Settings:
    preset: str
    window: int
    """Frames per training window."""
    batches: list[int]
    """Batch sizes tried for cvae_dist's best settings."""
    precisions: list[str]
    rollout_frames: int
    """Frames of the validation and test rollouts."""
    memory_windows: list[int]
    warmup: int
    repeats: int
    train_frames: int
    """Frames of the synthetic training video (PNG at twice the model's size, as real data is larger)."""
    loader_epochs: int
    """Passes over the training video per data-loading repeat."""


def settings_for(args) -> Settings:
    if args.quick:
        return Settings(
            preset=args.preset or "tiny",
            window=4,
            batches=args.batches or [2, 4],
            precisions=args.precisions,
            rollout_frames=16,
            memory_windows=[4, 8],
            warmup=1,
            repeats=2,
            train_frames=128,
            loader_epochs=8,
        )
    on_gpu = args.device == "cuda"
    return Settings(
        preset=args.preset or "lab",
        window=16,
        batches=args.batches or ([2, 16, 64] if on_gpu else [2, 8]),
        precisions=args.precisions,
        rollout_frames=630,
        memory_windows=[8, 16, 32, 64],
        warmup=2 if on_gpu else 1,
        repeats=10 if on_gpu else 3,
        train_frames=2048,
        loader_epochs=4,
    )


# ---- measuring ------------------------------------------------------------------------------


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
    """Peak memory of a block above the level at its start (see the module docstring)."""

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
    """Median seconds of `fn()` over `repeats` calls after `warmup`, and the peak memory of one more call in bytes."""
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


@dataclass
class Row:
    section: str
    name: str
    frames_per_s: float
    seconds: float
    """Median seconds of one repeat (a step, a pass over the data, a rollout)."""
    peak_mib: float | None = None
    notes: dict = field(default_factory=dict)


# ---- the plain course-style loop ------------------------------------------------------------


def plain_step(model, optimizer, frames, labels, teacher_forcing: bool, beta: float, reencode: bool) -> float:
    """One training step the way the course writes it: frame by frame, the loss summed, one backward.

    With `reencode` the previous frame is encoded again at every step, as the course's code does;
    without it each true frame is encoded once, the same computation as cvae_dist's rollout.
    """
    import torch

    from cvae_dist.loss import cvae_loss
    from cvae_dist.rollout import reparameterize

    preds, mus, logvars = [], [], []
    prev_frame, prev_feature = frames[:, 0], None if reencode else model.encode_frames(frames[:, 0])
    for t in range(1, frames.shape[1]):
        label_feature = model.encode_labels(labels[:, t])
        frame_feature = model.encode_frames(frames[:, t])
        mu, logvar = model.posterior(frame_feature, label_feature)
        z = reparameterize(mu, logvar, torch.randn_like(mu))
        source = frames[:, t - 1] if teacher_forcing else prev_frame
        if reencode or (not teacher_forcing and t > 1):
            prev_feature = model.encode_frames(source)
        prev_frame = model.decode(prev_feature, label_feature, z)
        prev_feature = frame_feature
        preds.append(prev_frame), mus.append(mu), logvars.append(logvar)
    terms = cvae_loss(torch.stack(preds, 1), frames[:, 1:], torch.stack(mus, 1), torch.stack(logvars, 1), beta)
    optimizer.zero_grad()
    terms.total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return terms.total.item()  # the course logs every step's loss


def plain_generate(model, first_frame, labels):
    """The course's test loop: one sequence at a time, one frame at a time, each label encoded as it comes."""
    import torch

    frames, prev = [first_frame], first_frame
    for t in range(1, labels.shape[0]):
        z = torch.randn((1, model.config.N_dim, *first_frame.shape[-2:]), device=first_frame.device)
        prev = model.decode(model.encode_frames(prev), model.encode_labels(labels[t : t + 1]), z)
        frames.append(prev)
    return torch.cat(frames)


# ---- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, args, settings: Settings, workdir: Path):
        import torch

        from cvae_dist.data.synthetic import generate_dataset

        self.args, self.s, self.workdir = args, settings, workdir
        self.device = torch.device(args.device)
        self.rows: list[Row] = []
        self.out_of_memory: list[str] = []
        """Settings that did not fit on the GPU, e.g. 'batch 256, bf16'."""
        self.started = time.perf_counter()
        data_dir = Path(args.data) if args.data else REPO / "data"
        self.root = generate_dataset(
            data_dir / f"bench-{settings.train_frames}-{settings.rollout_frames}",
            train_frames=settings.train_frames,
            clip_frames=min(320, settings.train_frames),
            val_frames=settings.rollout_frames,
            test_frames=settings.rollout_frames,
            test_sequences=5,
            height=64,
            width=128,
            progress=False,
        )

    def add(self, row: Row) -> None:
        self.rows.append(row)
        peak = "" if row.peak_mib is None else f", peak {row.peak_mib:.0f} MiB"
        print(f"  {row.section:8s} {row.name}: {row.frames_per_s:,.0f} frames/s ({row.seconds * 1000:.1f} ms{peak})", file=sys.stderr, flush=True)
        self.write_json(finished=False)

    def report(self, finished: bool) -> dict:
        command = " ".join(["python", "benchmarks/bench.py", *self.args.argv])
        return {
            "machine": machine(self.device),
            "command": command,
            "finished": finished,
            "settings": asdict(self.s),
            "seconds": time.perf_counter() - self.started,
            "rows": [asdict(r) for r in self.rows],
            "out_of_memory": self.out_of_memory,
            "summary": summary(self.rows, self.s, self.args.peak_tflops),
        }

    def write_json(self, finished: bool) -> dict:
        report = self.report(finished)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(report, indent=2))
        return report

    def fitting(self, measure, what: str) -> Row | None:
        """`measure()`, or None (and `what` noted in out_of_memory) when the GPU runs out of memory."""
        import torch

        try:
            return measure()
        except torch.cuda.OutOfMemoryError:
            pass
        # Outside the except block, so that the traceback no longer holds the failed step's tensors.
        self.out_of_memory.append(what)
        print(f"  train    cvae_dist, {what}: out of memory", file=sys.stderr, flush=True)
        gc.collect()
        torch.cuda.empty_cache()
        return None

    def config(self, **flags):
        """cvae_dist's settings for the benchmark's dataset, with these flags."""
        from cvae_dist.config import parse_args

        settings = {
            "DR": self.root,
            "save_root": self.workdir / "run",
            "preset": self.s.preset,
            "train_vi_len": self.s.window,
            "val_vi_len": self.s.rollout_frames,  # the validation video's length: training refuses a longer one
            "batch_size": 2,
            "mixed_precision": "no",
            "num_workers": 0,
            "lr_milestones": "",
            "kl_anneal_type": "Without",
            **flags,
        }
        argv = []
        for key, value in settings.items():
            if isinstance(value, bool):
                argv.append(f"--{key}" if value else f"--no-{key}")
            else:
                argv += [f"--{key}", *str(value).split()]
        return parse_args(argv)

    def parts(self, precision: str = "no", **flags):
        """cvae_dist's own run parts for these flags, computing in `precision`.

        Accelerate's state is one per process and stays at fp32 here; the parts' one autocast,
        which every forward pass of a run computes in, applies the row's precision."""
        from cvae_dist.training import build
        from cvae_dist.training.precision import HALF, Precision

        return replace(build(self.config(**flags)), precision=Precision(self.device.type, HALF.get(precision)))

    def batch(self, size: int, window: int):
        """The first `size` training windows of `window` frames, uint8 on the device, and their indices."""

        from cvae_dist.data.course import CourseDataset, IndexedWindows, collate_windows

        data = self.config().data
        windows = IndexedWindows(CourseDataset(self.root, data.frame_H, data.frame_W, progress=False).train(), window)
        frames, labels, indices = collate_windows([windows[i] for i in range(size)])
        return frames.to(self.device), labels.to(self.device), indices

    # -- training --

    def train_plain(self, teacher_forcing: bool, reencode: bool) -> Row:
        import torch

        frames, labels, _ = self.batch(2, self.s.window)
        frames, labels = frames.float() / 255, labels.float() / 255
        torch.manual_seed(0)
        from cvae_dist.model import CVAE

        model = CVAE(self.config().model).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        seconds, peak = time_it(
            lambda: plain_step(model, optimizer, frames, labels, teacher_forcing, 1.0, reencode), self.device, self.s.warmup, self.s.repeats
        )
        how = "course, re-encodes x_{t-1}" if reencode else "each frame encoded once"
        return self._train_row(
            f"plain loop ({how}), batch 2, fp32, TF {'on' if teacher_forcing else 'off'}",
            frames.shape,
            seconds,
            peak,
            teacher_forcing=teacher_forcing,
        )

    def train_cvae(
        self,
        batch: int,
        precision: str,
        teacher_forcing: bool,
        window: int | None = None,
        checkpointing: bool = False,
        compile: bool = False,
        section: str = "train",
    ) -> Row:
        from cvae_dist.training import Loop

        window = window or self.s.window
        loop = Loop(
            self.parts(
                precision,
                batch_size=batch,
                tfr=1.0 if teacher_forcing else 0.0,
                train_vi_len=window,
                recompute_activations=checkpointing,
                compile=compile,
            )
        )
        frames, labels, indices = self.batch(batch, window)
        loop.model.train()
        seconds, peak = time_it(lambda: loop.train_batch(frames, labels, indices), self.device, self.s.warmup + (2 if compile else 0), self.s.repeats)
        name = f"cvae_dist, batch {batch}, {precision_name(precision)}, TF {'on' if teacher_forcing else 'off'}"
        if section == "memory":
            name = f"cvae_dist, window {window}, checkpointing {'on' if checkpointing else 'off'}"
        if compile:
            name += ", compiled"
        return self._train_row(name, frames.shape, seconds, peak, section, precision=precision, teacher_forcing=teacher_forcing)

    def _train_row(self, name, shape, seconds, peak, section="train", **notes) -> Row:
        predicted = shape[0] * (shape[1] - 1)
        return Row(section, name, predicted / seconds, seconds, peak / MiB, {"batch": shape[0], "window": shape[1], **notes})

    def run_train(self) -> None:
        for teacher_forcing in (True, False):
            self.add(self.train_plain(teacher_forcing, reencode=True))
            self.add(self.train_plain(teacher_forcing, reencode=False))
            self.add(self.train_cvae(2, "no", teacher_forcing))
        too_big = {}  # precision -> the smallest batch that ran out of memory
        for batch in self.s.batches:
            for precision in self.s.precisions:
                if (batch, precision) == (2, "no") or batch >= too_big.get(precision, math.inf):
                    continue
                row = self.fitting(lambda: self.train_cvae(batch, precision, True), f"batch {batch}, {precision_name(precision)}")
                if row is None:
                    too_big[precision] = batch
                else:
                    self.add(row)
        tried = [r for r in self.rows if r.name.startswith("cvae_dist") and r.notes["teacher_forcing"]]
        best = max(tried, key=lambda r: r.frames_per_s)
        batch, precision = best.notes["batch"], best.notes["precision"]
        best.notes["best"] = True
        self.add(self.train_cvae(batch, precision, False))
        self.rows[-1].notes["best"] = True
        if self.args.compile:
            self.add(self.train_cvae(batch, precision, True, compile=True))
            self.rows[-1].notes["best"] = True  # the best setting, compiled; the summary takes the faster of the two

    # -- data --

    def run_data(self) -> None:
        from torch.utils.data import DataLoader

        from cvae_dist.data.course import CourseDataset, IndexedWindows, WindowSampler, paired
        from cvae_dist.training.build import training_loader

        for workers in (0, 2):
            config = self.config(num_workers=workers, batch_size=8)
            windows = IndexedWindows(CourseDataset(self.root, config.data.frame_H, config.data.frame_W, progress=False).train(), self.s.window)
            sampler = WindowSampler(lambda epoch: len(windows), shuffle=True, seed=0)
            loader = training_loader(config, windows, sampler)

            def epochs():
                for epoch in range(self.s.loader_epochs):
                    sampler.set_epoch(epoch)
                    for frames, labels, _ in loader:
                        frames, labels = frames.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
                return frames, labels

            seconds, _ = time_it(epochs, self.device, 1, self.s.repeats, memory=False)
            loaded = self.s.loader_epochs * len(loader) * 8 * self.s.window
            self.add(Row("data", f"uint8 cache, training loader, {workers} workers", loaded / seconds, seconds, notes={"workers": workers}))
        images, labels = paired(self.root / "train" / "train_img", self.root / "train" / "train_label")
        windows = PngWindows(images, labels, self.s.window, config.data.frame_H, config.data.frame_W)
        for workers in (0, 2):
            loader = DataLoader(windows, batch_size=8, num_workers=workers, persistent_workers=workers > 0, pin_memory=self.device.type == "cuda")
            seconds, _ = time_it(
                lambda: [batch[0].to(self.device, non_blocking=True) for batch in loader], self.device, 1, self.s.repeats, memory=False
            )
            loaded = len(windows) * self.s.window
            self.add(Row("data", f"PNG decoding every epoch (course), {workers} workers", loaded / seconds, seconds, notes={"workers": workers}))

    # -- rollouts --

    def run_rollout(self) -> None:
        import torch

        from cvae_dist.data.course import CourseDataset, to_unit_float
        from cvae_dist.evaluate import evaluate_video
        from cvae_dist.rollout import generate

        frames = self.s.rollout_frames
        for precision in self.s.precisions:
            parts = self.parts(precision)
            model = parts.accelerator.unwrap_model(parts.model).eval()
            label = precision_name(precision)
            seconds, peak = time_it(
                lambda: evaluate_video(model, parts.val_video, self.device, frames, autocast=parts.precision.autocast),
                self.device,
                1,
                max(1, self.s.repeats // 2),
            )
            self.add(Row("rollout", f"cvae_dist validation, {frames} frames, {label}", (frames - 1) / seconds, seconds, peak / MiB))
            tests = CourseDataset(self.root, parts.config.data.frame_H, parts.config.data.frame_W, progress=False).test()
            first = to_unit_float(torch.stack([torch.from_numpy(s.first_frame.copy()) for s in tests])).to(self.device)
            labels = to_unit_float(torch.stack([torch.from_numpy(s.labels[:frames].copy()) for s in tests])).to(self.device)

            def batched():
                with parts.precision.autocast():
                    return generate(model, first, labels)

            seconds, peak = time_it(batched, self.device, 1, max(1, self.s.repeats // 2))
            self.add(
                Row(
                    "rollout",
                    f"cvae_dist test, {len(tests)} sequences batched, {frames} frames, {label}",
                    len(tests) * (frames - 1) / seconds,
                    seconds,
                    peak / MiB,
                )
            )
            if precision == "no":

                @torch.no_grad()
                def one_by_one():
                    return [plain_generate(model, first[i : i + 1], labels[i]) for i in range(len(tests))]

                seconds, peak = time_it(one_by_one, self.device, 1, max(1, self.s.repeats // 2))
                self.add(
                    Row(
                        "rollout",
                        f"plain loop test, {len(tests)} sequences one by one, {frames} frames, fp32",
                        len(tests) * (frames - 1) / seconds,
                        seconds,
                        peak / MiB,
                    )
                )

    # -- memory --

    def run_memory(self) -> None:
        for window in self.s.memory_windows:
            for checkpointing in (False, True):
                self.add(self.train_cvae(2, "no", True, window=window, checkpointing=checkpointing, section="memory"))


class PngWindows:
    """Training windows decoded from their PNGs on every access, as the course's dataset does."""

    def __init__(self, images, labels, window: int, height: int, width: int):
        self.images, self.labels, self.window, self.size = images, labels, window, (height, width)

    def __len__(self) -> int:
        return len(self.images) // self.window

    def __getitem__(self, index: int):
        import numpy as np
        import torch

        from cvae_dist.data.images import read_rgb

        span = range(index * self.window, (index + 1) * self.window)
        frames = np.stack([read_rgb(self.images[i], *self.size) for i in span])
        labels = np.stack([read_rgb(self.labels[i], *self.size) for i in span])
        return torch.from_numpy(frames), torch.from_numpy(labels)


def machine(device) -> dict:
    import torch

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        model_names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = model_names[0] if model_names else info["cpu"]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def table(rows: list[Row]) -> str:
    lines = [f"{'section':8s}  {'what':78s} {'frames/s':>10s} {'ms/repeat':>10s} {'peak MiB':>9s}"]
    for r in rows:
        peak = "" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        best = " *" if r.notes.get("best") else ""
        lines.append(f"{r.section:8s}  {(r.name + best):78s} {r.frames_per_s:>10,.0f} {r.seconds * 1000:>10,.1f} {peak:>9s}")
    return "\n".join(lines)


SECTIONS = ("train", "data", "rollout", "memory")
FULL_EPOCH_FRAMES = 23_410  # the course's training video


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


def summary(rows: list[Row], settings: Settings, peak_tflops: float | None) -> dict:
    """The figures the issue asks for, from the table's rows."""
    by_name = {r.name: r for r in rows}
    result = {}
    for tf in ("on", "off"):
        plain = by_name.get(f"plain loop (each frame encoded once), batch 2, fp32, TF {tf}")
        ours = by_name.get(f"cvae_dist, batch 2, fp32, TF {tf}")
        if plain and ours:
            result[f"step_time_ratio_same_computation_tf_{tf}"] = ours.seconds / plain.seconds
    course = by_name.get("plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on")
    best = max((r for r in rows if r.notes.get("best") and r.notes.get("teacher_forcing")), key=lambda r: r.frames_per_s, default=None)
    if course and best:
        result["best_speedup_over_course_loop"] = best.frames_per_s / course.frames_per_s
    cached = [r.frames_per_s for r in rows if r.name.startswith("uint8 cache")]
    if cached:
        result["cached_loader_frames_per_s"] = max(cached)
    if best and settings.window == 16:
        flops = training_flops_per_frame(settings.preset, settings.window)
        predicted_per_epoch = FULL_EPOCH_FRAMES // settings.window * (settings.window - 1)
        result["training_gflop_per_frame"] = flops / 1e9
        result["best_tflops"] = best.frames_per_s * flops / 1e12
        result["full_epoch_seconds"] = predicted_per_epoch / best.frames_per_s
        if peak_tflops:
            result["share_of_peak"] = result["best_tflops"] / peak_tflops
    return result


def batch_list(text: str) -> list[int]:
    batches = sorted({int(b) for b in text.split(",") if b})
    if not batches or batches[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes separated by commas, got {text!r}")
    return batches


PRECISIONS = {"fp32": "no", "bf16": "bf16"}  # names in the table -> Accelerate's mixed_precision


def precision_name(precision: str) -> str:
    return next(name for name, value in PRECISIONS.items() if value == precision)


def precision_list(text: str) -> list[str]:
    names = [p for p in text.split(",") if p]
    if not names or set(names) - set(PRECISIONS):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(PRECISIONS)}, got {text!r}")
    return [PRECISIONS[p] for p in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="where to run (default: cuda when there is a GPU, else cpu)")
    parser.add_argument("--preset", choices=["lab", "tiny"], help="network widths (default: lab; tiny with --quick)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a minute or two on a CPU: tiny preset, short windows and rollouts, 2 repeats"
    )
    parser.add_argument(
        "--batches",
        type=batch_list,
        help="comma-separated batch sizes tried for cvae_dist's settings (default: 2,16,64 on a GPU, 2,8 on a CPU, 2,4 with --quick)",
    )
    parser.add_argument(
        "--precisions",
        type=precision_list,
        default="fp32,bf16",
        help="comma-separated precisions tried for cvae_dist's settings, of fp32,bf16 (default: both)",
    )
    parser.add_argument("--compile", action="store_true", help="also time cvae_dist's best setting under --compile (inductor; minutes of compiling)")
    parser.add_argument("--repeats", type=int, help="timed repeats per row, the median reported (default: 10 on a GPU, 3 on a CPU, 2 with --quick)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--data", help="folder for the synthetic benchmark dataset (default: data/ in the repository)")
    parser.add_argument(
        "--peak_tflops", type=float, help="the device's peak (e.g. 989 for an H100 SXM in dense bf16), to report the best setting's share of it"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the table and the machine as JSON to this file")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {','.join(SECTIONS)}")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # training takes a GPU whenever it sees one
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU visible")
    args.argv = argv if argv is not None else sys.argv[1:]
    settings = settings_for(args)
    settings.repeats = args.repeats or settings.repeats
    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as workdir:
        bench = Bench(args, settings, Path(workdir))
        for section in sections:
            getattr(bench, f"run_{section}")()
    report = bench.write_json(finished=True)
    print(
        f"# {report['machine']['cpu']} ({report['machine'].get('gpu', 'no GPU')}), torch {torch.__version__}, "
        f"load average {report['machine']['load_average'][0]:.1f}, preset {settings.preset}, window {settings.window}; "
        f"* = cvae_dist's best setting; {report['seconds']:.0f} s"
    )
    print(table(bench.rows))
    if bench.out_of_memory:
        print(f"out of memory: {'; '.join(bench.out_of_memory)}")
    for key, value in report["summary"].items():
        print(f"{key}: {value:,.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed and memory of cvae_dist against a plain course-style loop, on one machine, in one run.

    python benchmarks/bench.py [--device cpu|cuda] [--preset lab|tiny] [--quick] [--batches 2,16,64] [--compile] [--peak_tflops P] [--peak_gbps G] [--json OUT]

Prints one table and writes it as JSON. Rows:
  train   frames/s and peak memory of a training step: a plain frame-by-frame loop written the
          way the course's code is (batch 2, fp32), and cvae_dist's real `Loop.train_batch` at
          the same settings and at larger batches and bf16, teacher forcing on and off;
  data    frames/s delivered by the training loader from the uint8 cache, and by a loader that
          decodes the PNGs of every window each time (as the course's dataset does);
  rollout the validation video rolled out from its first frame, and the test sequences
          generated from theirs (batched in cvae_dist, one sequence at a time in the plain loop);
  memory  peak memory of a training step against the window length, with and without
          per-frame activation checkpointing;
  kernels the kernels one training step (`Loop.train_batch`, batch 2, fp32) launches, TF on and
          off: eager; compiled (with `--compile`: the parts --compile builds, under
          --compile_backend), whole and by region (--compile_scope); and, on a GPU with
          --compile, compiled whole with --compile_mode reduce-overhead (inductor's CUDA graphs). Counted with torch.profiler: on a GPU the
          CUDA kernels and the host's launches (a graph's replay is one launch); on a CPU the
          dispatcher ops that do work of their own (not views, allocations, or ops that only
          call others), plus inductor's generated C++ kernels (common.cpu_kernels). Per step
          and per predicted frame, split into forward, backward and optimizer in the JSON; no timing;
  compile cvae_dist's best setting of `train` under torch.compile (`--compile` adds it, last);
          without `train` in the same run, each setting of --batches and --precisions.
"Frames" are predicted frames (B x (T-1) per training step) except in `data` (frames loaded).
Timings: warm-up steps, then several repeats, the median reported; on a GPU each repeat is
bracketed by CUDA events. Peak memory: on a GPU the allocator's peak above what was allocated
before the step; on a CPU the process's peak resident memory above its level before the step.
`--quick` (tiny preset, short windows and rollouts, few repeats) is a smoke run of a minute or two.
A batch size that runs out of GPU memory (common.is_out_of_memory: PyTorch's OutOfMemoryError,
and cuDNN's and cuBLAS's errors that mean the same) is listed under `out_of_memory`, and larger ones are
not tried at that precision; one larger than the training windows the data has is a skipped row.
`--json` is rewritten after every row, so a run stopped early (as benchmarks/gpu_check.py stops
one at its time budget) still leaves the rows it measured.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common import (
    KERNEL_TARGET,
    PRECISIONS,
    REPO,
    MiB,
    Row,
    count_kernels,
    is_out_of_memory,
    machine,
    measured,
    peak_bandwidth_gbps,
    precision_name,
    summary,
    table,
    time_it,
)
from course_loop import PngWindows, plain_generate, plain_step
from cvae_dist.allocator import keep_freed_memory

SECTIONS = ("train", "data", "rollout", "memory", "kernels", "compile")
KERNEL_VARIANTS = ("eager", "compiled", "compiled by region", "CUDA graphs")


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
    on_gpu = args.device == "cuda"
    if args.quick:
        return Settings(args.preset or "tiny", 4, args.batches or [2, 4], args.precisions, 16, [4, 8], 1, args.repeats or 2, 128, 8)
    batches = args.batches or ([2, 16, 64] if on_gpu else [2, 8])
    repeats = args.repeats or (10 if on_gpu else 3)
    return Settings(args.preset or "lab", 16, batches, args.precisions, 630, [8, 16, 32, 64], 2 if on_gpu else 1, repeats, 2048, 4)


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
        print(table([row]).splitlines()[1], file=sys.stderr, flush=True)
        self.write_json(finished=False)

    def write_json(self, finished: bool) -> dict:
        report = {
            "machine": machine(),
            "command": " ".join(["python", "benchmarks/bench.py", *self.args.argv]),
            "finished": finished,
            "settings": asdict(self.s),
            "seconds": time.perf_counter() - self.started,
            "rows": [asdict(r) for r in self.rows],
            "out_of_memory": self.out_of_memory,
            "summary": summary(self.rows, self.s.preset, self.s.window, self.args.peak_tflops, self.args.peak_gbps),
        }
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(report, indent=2))
        return report

    def fitting(self, measure, what: str) -> Row | None:
        """`measure()`, or None (and `what` noted in out_of_memory) when the GPU runs out of memory
        (`is_out_of_memory`: cuDNN's and cuBLAS's failures to allocate included); other errors propagate."""
        import torch

        try:
            return measure()
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(err):
                raise
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
            argv += [f"--{key}" if value else f"--no-{key}"] if isinstance(value, bool) else [f"--{key}", *str(value).split()]
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

        from cvae_dist.model import CVAE

        frames, labels, _ = self.batch(2, self.s.window)
        frames, labels = frames.float() / 255, labels.float() / 255
        torch.manual_seed(0)
        model = CVAE(self.config().model).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = functools.partial(plain_step, model, optimizer, frames, labels, teacher_forcing, 1.0, reencode)
        seconds, peak = time_it(step, self.device, self.s.warmup, self.s.repeats)
        how = "course, re-encodes x_{t-1}" if reencode else "each frame encoded once"
        name = f"plain loop ({how}), batch 2, fp32, TF {'on' if teacher_forcing else 'off'}"
        return self._train_row(name, frames.shape, seconds, peak, teacher_forcing=teacher_forcing)

    def train_cvae(
        self, batch: int, precision: str, teacher_forcing: bool, section: str = "train", window: int | None = None, checkpointing=False
    ) -> Row:
        """cvae_dist's own training step (`Loop.train_batch`); in the compile section under torch.compile."""
        from cvae_dist.training import Loop

        window, compile = window or self.s.window, section == "compile"
        flags = {"batch_size": batch, "tfr": float(teacher_forcing), "train_vi_len": window, "recompute_activations": checkpointing}
        loop = Loop(self.parts(precision, **flags, **({"compile": True, "compile_backend": self.args.compile_backend} if compile else {})))
        frames, labels, indices = self.batch(batch, window)
        loop.model.train()
        warmup = self.s.warmup + (2 if compile else 0)  # the first calls compile
        seconds, peak = time_it(lambda: loop.train_batch(frames, labels, indices), self.device, warmup, self.s.repeats)
        return self._train_row(
            self.name(section, batch, precision, teacher_forcing, window, checkpointing),
            frames.shape,
            seconds,
            peak,
            section,
            precision=precision,
            teacher_forcing=teacher_forcing,
        )

    @staticmethod
    def name(section: str, batch: int, precision: str, teacher_forcing: bool, window: int, checkpointing: bool) -> str:
        if section == "memory":
            return f"cvae_dist, window {window}, checkpointing {'on' if checkpointing else 'off'}"
        return f"cvae_dist, batch {batch}, {precision_name(precision)}, TF {'on' if teacher_forcing else 'off'}" + (
            ", compiled" if section == "compile" else ""
        )

    def _train_row(self, name, shape, seconds, peak, section="train", **notes) -> Row:
        predicted = shape[0] * (shape[1] - 1)
        return Row(section, name, predicted / seconds, seconds, peak / MiB, {"batch": shape[0], "window": shape[1], **notes})

    def sweep_row(self, batch: int, precision: str, teacher_forcing: bool = True, section: str = "train") -> Row | None:
        """cvae_dist's training step at this setting; a skipped row where the data has too few windows
        for the batch, None where it does not fit on the GPU."""
        from cvae_dist.errors import UserError

        try:
            return self.fitting(lambda: self.train_cvae(batch, precision, teacher_forcing, section), f"batch {batch}, {precision_name(precision)}")
        except UserError as err:  # the only one a valid setting meets: a batch larger than the data's windows
            name = self.name(section, batch, precision, teacher_forcing, self.s.window, False)
            return Row(section, name, notes={"batch": batch, "precision": precision, "teacher_forcing": teacher_forcing}, skipped=str(err))

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
                row = self.sweep_row(batch, precision)
                if row is None:
                    too_big[precision] = batch
                else:
                    self.add(row)
        best = max((r for r in measured(self.rows, "cvae_dist", teacher_forcing=True) if r.section == "train"), key=lambda r: r.frames_per_s)
        best.notes["best"] = True
        self.add(self.train_cvae(best.notes["batch"], best.notes["precision"], False))
        self.rows[-1].notes["best"] = True

    def run_compile(self) -> None:
        """The best setting compiled (the summary takes the faster of the two), or each setting asked for."""
        best = [(r.notes["batch"], r.notes["precision"]) for r in self.rows if r.notes.get("best") and r.notes["teacher_forcing"]]
        for batch, precision in best or [(b, p) for b in self.s.batches for p in self.s.precisions]:
            row = self.sweep_row(batch, precision, section="compile")
            if row is not None:
                row.notes["best"] = row.skipped is None
                self.add(row)

    # -- kernels --

    def run_kernels(self) -> None:
        for variant in KERNEL_VARIANTS:
            for teacher_forcing in (True, False):
                self.add(self.kernels_row(variant, teacher_forcing))

    def kernels_row(self, variant: str, teacher_forcing: bool, batch: int = 2) -> Row:
        """The kernels one training step launches (common.count_kernels), batch 2, fp32, after warm-up."""
        from cvae_dist.training import Loop

        name = f"cvae_dist, batch {batch}, fp32, TF {'on' if teacher_forcing else 'off'}, {variant}"
        notes = {"variant": variant, "batch": batch, "window": self.s.window, "precision": "no", "teacher_forcing": teacher_forcing}
        compiled, graphs = variant != "eager", variant == "CUDA graphs"
        skipped = None
        if graphs and self.device.type != "cuda":
            skipped = "CUDA graphs need a GPU"
        elif compiled and not self.args.compile:
            skipped = "needs --compile (inductor compiles the step for minutes on a CPU)"
        elif graphs and self.args.compile_backend != "inductor":
            skipped = "CUDA graphs are inductor's (--compile_mode reduce-overhead): needs --compile_backend inductor"
        if skipped:
            return Row("kernels", name, notes=notes, skipped=skipped)
        flags = {"batch_size": batch, "tfr": float(teacher_forcing)}
        if compiled:
            scope, mode = ("region" if variant == "compiled by region" else "whole"), ("reduce-overhead" if graphs else "default")
            flags.update(compile=True, compile_backend=self.args.compile_backend, compile_scope=scope, compile_mode=mode)
            notes.update(backend=self.args.compile_backend, scope=scope, mode=mode)
        loop = Loop(self.parts("no", **flags))
        frames, labels, indices = self.batch(batch, self.s.window)
        loop.model.train()
        began = time.perf_counter()
        loop.train_batch(frames, labels, indices)  # compiles the forward and backward passes, if compiled
        if compiled:
            notes["first_step_s"] = time.perf_counter() - began
        # Inductor's CUDA graphs run eagerly once, record on the next call and replay from the third.
        for _ in range(self.s.warmup + (2 if graphs else 1 if compiled else 0)):
            loop.train_batch(frames, labels, indices)
        counts = count_kernels(lambda: loop.train_batch(frames, labels, indices), self.device)
        counted = counts.get("cuda", counts["cpu"])
        predicted = batch * (self.s.window - 1)
        notes.update(kernels=counted["total"], kernels_per_frame=counted["total"] / predicted, model_kernels=counted["model"], counts=counts)
        if "launches" in counted:
            notes["launches"] = counted["launches"]
        return Row("kernels", name, notes=notes)

    # -- data --

    def run_data(self) -> None:
        from torch.utils.data import DataLoader

        from cvae_dist.data.course import CourseDataset, IndexedWindows, ResidentWindows, WindowSampler, paired
        from cvae_dist.training.build import training_loader

        config = self.config(batch_size=8)
        windows = IndexedWindows(CourseDataset(self.root, config.data.frame_H, config.data.frame_W, progress=False).train(), self.s.window)
        sources = [(f"uint8 cache, training loader, {workers} workers", workers, None) for workers in (0, 2)]
        sources.append((f"uint8 windows on the {self.device.type}, gathered there (--data_on_device on)", 0, ResidentWindows(windows, self.device)))
        for name, workers, resident in sources:
            sampler = WindowSampler(lambda epoch: len(windows), shuffle=True, seed=0)
            loader = training_loader(self.config(num_workers=workers, batch_size=8), windows, sampler, resident)

            def epochs():
                for epoch in range(self.s.loader_epochs):
                    sampler.set_epoch(epoch)
                    for frames, labels, _ in loader:
                        frames, labels = frames.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

            seconds, _ = time_it(epochs, self.device, 1, self.s.repeats, memory=False)
            loaded = self.s.loader_epochs * len(loader) * 8 * self.s.window
            self.add(Row("data", name, loaded / seconds, seconds, notes={"workers": workers}))
        images, labels = paired(self.root / "train" / "train_img", self.root / "train" / "train_label")
        windows = PngWindows(images, labels, self.s.window, config.data.frame_H, config.data.frame_W)
        for workers in (0, 2):
            loader = DataLoader(windows, batch_size=8, num_workers=workers, persistent_workers=workers > 0, pin_memory=self.device.type == "cuda")
            seconds, _ = time_it(lambda: [b[0].to(self.device, non_blocking=True) for b in loader], self.device, 1, self.s.repeats, memory=False)
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
            model = parts.network.eval()
            label = precision_name(precision)
            tests = CourseDataset(self.root, parts.config.data.frame_H, parts.config.data.frame_W, progress=False).test()
            first = to_unit_float(torch.stack([torch.from_numpy(s.first_frame.copy()) for s in tests])).to(self.device)
            labels = to_unit_float(torch.stack([torch.from_numpy(s.labels[:frames].copy()) for s in tests])).to(self.device)

            def batched():
                with parts.precision.autocast():
                    return generate(model, first, labels)

            @torch.no_grad()
            def one_by_one():
                return [plain_generate(model, first[i : i + 1], labels[i]) for i in range(len(tests))]

            self.rollout_row(
                f"cvae_dist validation, {frames} frames, {label}",
                1,
                lambda: evaluate_video(model, parts.val_video, self.device, frames, autocast=parts.precision.autocast),
            )
            self.rollout_row(f"cvae_dist test, {len(tests)} sequences batched, {frames} frames, {label}", len(tests), batched)
            if precision == "no":
                self.rollout_row(f"plain loop test, {len(tests)} sequences one by one, {frames} frames, fp32", len(tests), one_by_one)

    def rollout_row(self, name: str, sequences: int, rollout) -> None:
        seconds, peak = time_it(rollout, self.device, 1, max(1, self.s.repeats // 2))
        self.add(Row("rollout", name, sequences * (self.s.rollout_frames - 1) / seconds, seconds, peak / MiB))

    # -- memory --

    def run_memory(self) -> None:
        for window in self.s.memory_windows:
            for checkpointing in (False, True):
                self.add(self.train_cvae(2, "no", True, "memory", window, checkpointing))


def kernel_target_lines(figures: dict) -> list[str]:
    """Whether the compiled model meets KERNEL_TARGET, for each TF setting counted both ways."""
    lines = []
    for tf in ("off", "on"):
        share = figures.get(f"compiled_over_eager_model_kernels_tf_{tf}")
        if share is not None:
            verdict = "met" if share <= KERNEL_TARGET else "not met"
            lines.append(
                f"kernel target, TF {tf}: the compiled forward and backward passes launch {share:.2f}x the eager ones' kernels "
                f"(target <= {KERNEL_TARGET:g}x{', set for TF off' if tf == 'on' else ''}): {verdict}"
            )
    return lines


def listed(kind, choices=None):
    """An argparse type: comma-separated values of `kind`, each one of `choices` if given."""

    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v]
        except ValueError:
            values = []
        if not values or (choices and set(values) - set(choices)) or (kind is int and min(values) < 1):
            expected = f"a comma-separated subset of {','.join(choices)}" if choices else "positive numbers separated by commas"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return sorted(set(values)) if kind is int else values

    return parse


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
        type=listed(int),
        help="comma-separated batch sizes of cvae_dist's settings (default: 2,16,64 on a GPU, 2,8 on a CPU, 2,4 with --quick)",
    )
    parser.add_argument(
        "--precisions",
        type=listed(str, PRECISIONS),
        default="fp32,bf16",
        help="comma-separated precisions of cvae_dist's settings, of fp32,bf16 (default: both)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add the compile section, last: cvae_dist's best setting under torch.compile (minutes of compiling)"
    )
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile's backend in the compile section (default: inductor)")
    parser.add_argument("--repeats", type=int, help="timed repeats per row, the median reported (default: 10 on a GPU, 3 on a CPU, 2 with --quick)")
    parser.add_argument(
        "--sections",
        type=listed(str, SECTIONS),
        default="train,data,rollout,memory,kernels",
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but compile)",
    )
    parser.add_argument("--data", help="folder for the synthetic benchmark dataset (default: data/ in the repository)")
    parser.add_argument(
        "--peak_tflops", type=float, help="the device's peak (e.g. 989 for an H100 SXM in dense bf16), to report the best setting's share of it"
    )
    parser.add_argument(
        "--peak_gbps",
        type=float,
        help="the device's peak memory bandwidth in GB/s, to report the best setting's share of it "
        "(default on a GPU from its name: H100 SXM 3350, H100 PCIe 2000, H100 NVL 3900, H200 4800)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the table and the machine as JSON to this file")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as every cvae_dist command does, for the course's loop too
    args.precisions = [PRECISIONS[p] for p in args.precisions]
    sections = [*dict.fromkeys([*args.sections, *(["compile"] if args.compile else [])])]
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # training takes a GPU whenever it sees one
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU visible")
    if args.peak_gbps is None and args.device == "cuda":
        args.peak_gbps = peak_bandwidth_gbps(torch.cuda.get_device_name(0))
    args.argv = argv if argv is not None else sys.argv[1:]
    settings = settings_for(args)
    if args.compile:
        import torch._inductor.config

        # Inductor names its C++ kernels in the profiler (for the kernels section) only when compiled
        # so. For the whole run, so that the compile section reuses what the kernels section compiled:
        # without a profiler running, each kernel's check costs nanoseconds.
        torch._inductor.config.cpp.enable_kernel_profile = True
    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as workdir:
        bench = Bench(args, settings, Path(workdir))
        for section in sections:
            getattr(bench, f"run_{section}")()
    report = bench.write_json(finished=True)
    device = report["machine"]["gpu"]["name"] if report["machine"]["gpu"] else "no GPU"
    print(
        f"# {report['machine']['cpu']} ({device}), torch {torch.__version__}, load average {report['machine']['load_average'][0]:.1f}, "
        f"preset {settings.preset}, window {settings.window}; * = cvae_dist's best setting; {report['seconds']:.0f} s"
    )
    print(table(bench.rows, report["summary"]))
    if bench.out_of_memory:
        print(f"out of memory: {'; '.join(bench.out_of_memory)}")
    for line in kernel_target_lines(report["summary"]):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

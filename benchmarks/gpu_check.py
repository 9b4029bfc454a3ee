"""One GPU acceptance run of cvae_dist: every GPU path measured in one call of under 8 minutes.

    benchmarks/gpu_check.sh OUT [--dry-run] [--peak_tflops P]

The steps run in order, each in its own processes under a time budget. A step that fails, or
overruns and is stopped, is recorded with the last lines of its output, and the next step runs:

  environment  GPU, memory, torch/CUDA/accelerate versions, bf16 support, which optional packages import
  data         the synthetic dataset of the training steps (python -m cvae_dist.data.synthetic)
  bench        benchmarks/bench.py --sections train: the course's loop against cvae_dist, fp32 and
               bf16, batch sizes up to the largest that fits, with and without --compile
  train        accelerate launch --config_file accelerate_configs/rtx.yaml cvae_dist/train.py, lab
               preset, bf16; stopped by SIGTERM (the preemption path) a fixed time after training starts
  resume       the same run resumed from that checkpoint for two more epochs, then its final evaluation
  fp16         mixed precision fp16 (loss scaling) for one short epoch: every logged loss finite
  deepspeed    accelerate_configs/deepspeed_zero2.yaml on one process for one short epoch, when
               deepspeed imports ("not installed" otherwise)

Writes OUT/gpu_check.json, OUT/gpu_check.md (its tables go into docs/benchmarks.md), OUT/bench.json
and OUT/logs/<step>.log; the report is rewritten after every step. Datasets and runs go to a
temporary folder. Exit status 0 when every step passed or was skipped for a stated reason, else 1.

--dry-run runs the same steps on the CPU with the tiny preset and tiny data, in a minute or two on
a quiet machine. fp16 then trains in fp32 (fp16 autocast does nothing on a CPU), and the DeepSpeed
step is skipped: on a CPU, DeepSpeed first spends minutes compiling an op of its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench import Row, table

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20

# Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA's datasheets), by the name torch reports; the
# first entry the name contains wins. NVL cards run at other clocks: their figure is not assumed.
PEAK_BF16_TFLOPS = (("NVL", None), ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))

OPTIONAL_PACKAGES = (
    "accelerate",
    "transformers",
    "safetensors",
    "tensorboard",
    "imageio",
    "PIL",
    "numpy",
    "yaml",
    "tqdm",
    "matplotlib",
    "huggingface_hub",
    "psutil",
    "deepspeed",
)

TRAINING_STARTED = "world size "  # the trainer's first line once its stop-signal handler is installed
STOP_RESERVE_S = 20  # what the trainer may need after SIGTERM: finish its step, save the checkpoint
MIN_STEP_S = 5


@dataclass(frozen=True)
class Plan:
    """Everything the GPU run and the CPU dry run do differently."""

    device: str
    data: list[str]
    """Flags of `python -m cvae_dist.data.synthetic` besides --root."""
    run: list[str]
    """cvae_dist/train.py flags of every training step."""
    short: list[str]
    """Added for the fp16 and DeepSpeed steps: one short epoch."""
    rtx_launch: list[str]
    """accelerate launch flags after --config_file accelerate_configs/rtx.yaml."""
    bench: list[str]
    train_seconds: float
    """How long the train step trains before it is sent SIGTERM."""
    env: dict[str, str]
    """Set for every step's processes."""
    budgets: dict[str, float]
    """Seconds each step may take before it is stopped."""
    total_s: float
    """Seconds the whole check may take: a step gets at most what is left of it."""
    skip: dict[str, str] = field(default_factory=dict)
    """Steps not run, and why."""

    @property
    def frames_per_step(self) -> int:
        """Predicted frames per optimizer step of the train step: batch x (window - 1)."""

        def value(flag: str) -> int:
            return int(self.run[self.run.index(flag) + 1])

        return value("--batch_size") * (value("--train_vi_len") - 1)


GPU = Plan(
    device="cuda",
    # 6,400 frames (400 windows of 16) render in seconds on 16 cores, at twice the model's size as in the bench.
    data=["--train-frames", "6400", "--height", "64", "--width", "128"],
    # The demo's recipe (autoregressive from the start, beta fixed at 1) on the lab network; a
    # validation rollout of 630 frames every 10 epochs of 12 steps, so that it costs a few percent.
    run=[
        "--preset",
        "lab",
        "--train_vi_len",
        "16",
        "--batch_size",
        "32",
        "--num_workers",
        "4",
        "--tfr",
        "0",
        "--kl_anneal_type",
        "Without",
        "--lr_milestones",
        "--log_every",
        "10",
        "--eval_every",
        "10",
        "--per_save",
        "10",
        "--checkpoints_total_limit",
        "2",
    ],
    short=["--partial", "0.5", "--batch_size", "16", "--log_every", "1", "--val_vi_len", "64"],
    rtx_launch=[],
    bench=["--device", "cuda", "--sections", "train", "--batches", "2,16,64,128,256", "--repeats", "5", "--compile"],
    train_seconds=160,
    env={},
    budgets={"environment": 30, "data": 30, "bench": 90, "train": 190, "resume": 40, "fp16": 35, "deepspeed": 45},
    # Under 8 minutes with the 10 s grace a step stopped at its budget may take.
    total_s=460,
)

DRY_RUN = Plan(
    device="cpu",
    data=["--train-frames", "64", "--height", "32", "--width", "64"],
    run=[
        "--preset",
        "tiny",
        "--train_vi_len",
        "4",
        "--val_vi_len",
        "8",
        "--batch_size",
        "2",
        "--num_workers",
        "0",
        "--tfr",
        "0",
        "--kl_anneal_type",
        "Without",
        "--lr_milestones",
        "--log_every",
        "1",
        "--eval_every",
        "1",
        "--per_save",
        "1",
        "--checkpoints_total_limit",
        "2",
        "--bn_recalibration_windows",
        "4",
    ],
    short=["--partial", "0.25"],
    # bf16 on a CPU is many times slower than fp32 for the tiny network; --cpu keeps a dry run off a GPU.
    rtx_launch=["--cpu", "--mixed_precision", "no"],
    bench=["--device", "cpu", "--quick", "--sections", "train", "--batches", "2", "--precisions", "fp32", "--repeats", "1"],
    train_seconds=8,
    # The CPU only; one thread per process, since torch's default of a thread per core makes
    # processes that share a small machine wait on each other's threads many times over.
    env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    # Generous: the suite runs it on 2 cores that other work shares.
    budgets={"environment": 60, "data": 90, "bench": 180, "train": 120, "resume": 120, "fp16": 120, "deepspeed": 0},
    total_s=600,
    skip={
        "deepspeed": "dry run: DeepSpeed on a CPU first compiles its shared-memory op with g++ (minutes on 2 cores); "
        "tests/test_deepspeed.py runs ZeRO on a CPU"
    },
)


def peak_tflops(gpu_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in gpu_name), None)


# ---- step 1 runs this in a process of its own --------------------------------------------------


def write_environment(path: str) -> None:
    """The machine as JSON. In a process of its own, so that the check never holds a CUDA context
    (memory the bench's largest batch could use) and a broken install fails only this step."""
    import importlib
    import platform

    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "gpu": None,
        "packages": {},
    }
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
    for name in OPTIONAL_PACKAGES:
        try:
            info["packages"][name] = getattr(importlib.import_module(name), "__version__", "imported")
        except Exception as err:  # noqa: BLE001 - a package that fails to import in any way is reported, not fatal
            info["packages"][name] = None
            info.setdefault("import_errors", {})[name] = f"{type(err).__name__}: {err}"
    Path(path).write_text(json.dumps(info, indent=2))


# ---- running one command under a budget ---------------------------------------------------------


@dataclass
class Outcome:
    returncode: int | None
    """None when the command was stopped at its budget."""
    log: Path
    signalled_after_s: float | None = None
    """Seconds of training before the trainer was sent SIGTERM (the train step)."""

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 15) -> list[str]:
        # tqdm redraws its bar with carriage returns: each redraw is a line of its own here.
        return [line for line in re.split(r"[\r\n]+", self.text) if line.strip()][-lines:]


class GpuMemoryPeak:
    """The most GPU memory in use while a step runs, sampled by nvidia-smi every half second (MiB).

    From outside the trainer, so it needs no change to it; it includes the CUDA context and the
    blocks PyTorch keeps cached, so it reads higher than torch.cuda.max_memory_allocated."""

    def __init__(self, enabled: bool):
        self.enabled, self.samples, self.process = enabled and shutil.which("nvidia-smi") is not None, [], None

    def __enter__(self) -> GpuMemoryPeak:
        if self.enabled:
            import threading

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


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the command and everything it started, SIGKILL to what is left 5 s later."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
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


def signal_trainer(launcher: subprocess.Popen) -> None:
    """SIGTERM to the training process only: some accelerate versions' launchers die of it
    without passing it on, others kill the trainer 5 s later, before its checkpoint is safe."""
    for pid in children(launcher.pid):
        os.kill(pid, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- what the runs left behind --------------------------------------------------------------------


def scalars(save_root: Path) -> dict[str, list[tuple[float, int, float]]]:
    """Every scalar a run logged to TensorBoard: tag -> [(wall time, step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cvae_dist.tracking import TB_PROJECT

    if not (save_root / TB_PROJECT).is_dir():  # the run failed before it logged anything
        return {}
    events = EventAccumulator(str(save_root / TB_PROJECT), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.wall_time, e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def latest_manifest(save_root: Path) -> dict:
    from cvae_dist import checkpoint as ckpt

    found = ckpt.list_checkpoints(save_root)
    return json.loads((found[-1] / ckpt.MANIFEST).read_text()) if found else {}


def training_rates(loss_points: list[tuple[float, int, float]], frames_per_step: int) -> dict:
    """Frames/s between consecutive logged losses: the median (steady training; the few intervals
    holding a validation or a checkpoint are outliers) and the overall mean."""
    pairs = list(zip(loss_points, loss_points[1:]))
    rates = [(b[1] - a[1]) * frames_per_step / (b[0] - a[0]) for a, b in pairs if b[0] > a[0]]
    if not rates:
        return {}
    (first_wall, first_step, _), (last_wall, last_step, _) = loss_points[0], loss_points[-1]
    return {"frames_per_s": statistics.median(rates), "frames_per_s_overall": (last_step - first_step) * frames_per_step / (last_wall - first_wall)}


def last(points: list, default=None):
    return points[-1][2] if points else default


def memory_text(peak_mib: int | None) -> str:
    return f"peak {peak_mib:,} MiB on the GPU" if peak_mib is not None else "no GPU memory figure"


def psnr_text(psnr: float | None, baseline: float | None) -> str:
    if psnr is None:
        return "no validation yet"
    return f"PSNR {psnr:.2f} dB vs copy-first {baseline:.2f} dB"


# ---- the check ------------------------------------------------------------------------------------


@dataclass
class Check:
    plan: Plan
    out: Path
    work: Path
    peak_tflops: float | None
    deadline: float = field(init=False)
    steps: list[dict] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.deadline = self.started + self.plan.total_s
        (self.out / "logs").mkdir(parents=True, exist_ok=True)

    # -- plumbing --

    @property
    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            PYTHONUNBUFFERED="1",  # the log is read while a step runs and is what a stopped step leaves
            **self.plan.env,
        )

    def run(self, name: str, command: list[str], budget: float, train_seconds: float | None = None) -> Outcome:
        """`command` with its output in logs/<name>.log, stopped at `budget` seconds. With
        `train_seconds` the trainer gets SIGTERM that long after it starts training (sooner if
        the budget would not leave it time to save)."""
        log = self.out / "logs" / f"{name}.log"
        log.write_text(f"$ {' '.join(command)}\n")
        began, training_since, signalled, over_budget = time.monotonic(), None, None, False
        with log.open("a") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=self.env, start_new_session=True)
            try:
                while process.poll() is None:
                    elapsed = time.monotonic() - began
                    if elapsed > budget:
                        over_budget = True
                        break
                    if train_seconds is not None and signalled is None:
                        if training_since is None and TRAINING_STARTED in log.read_text(errors="replace"):
                            training_since = elapsed
                        if (training_since is not None and elapsed - training_since >= train_seconds) or elapsed >= budget - STOP_RESERVE_S:
                            signal_trainer(process)
                            signalled = elapsed - (training_since or elapsed)
                    time.sleep(0.5)
            finally:  # also when this process fails: nothing of a step outlives it
                if process.poll() is None:
                    stop_group(process)
        return Outcome(None if over_budget else process.returncode, log, signalled)

    def launch(self, config: str, launch_flags: list[str], train_flags: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(REPO / "accelerate_configs" / config),
            *launch_flags,
            str(REPO / "cvae_dist" / "train.py"),
            *train_flags,
        ]

    def train_flags(self, name: str, *extra: str) -> list[str]:
        return ["--DR", str(self.work / "data"), "--save_root", str(self.work / "runs" / name), *self.plan.run, *extra]

    def status(self, name: str) -> str | None:
        return next((s["status"] for s in self.steps if s["step"] == name), None)

    @staticmethod
    def finished(outcome: Outcome, passed: bool, results: dict, headline: str, reason: str | None = None) -> dict:
        status = "timed out" if outcome.returncode is None else "ok" if passed else "failed"
        record = {"status": status, "results": results, "headline": headline, "log": f"logs/{outcome.log.name}"}
        if status != "ok":
            record["reason"] = reason or ("stopped at its time budget" if status == "timed out" else f"exit status {outcome.returncode}")
            record["tail"] = outcome.tail()
        return record

    # -- the steps --

    def step_environment(self, budget: float) -> dict:
        path = self.work / "environment.json"
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import gpu_check; gpu_check.write_environment({str(path)!r})"
        outcome = self.run("environment", [sys.executable, "-c", code], budget)
        if outcome.returncode != 0 or not path.is_file():
            return self.finished(outcome, False, {}, "")
        self.environment = env = json.loads(path.read_text())
        gpu, packages = env["gpu"], env["packages"]
        self.peak_tflops = self.peak_tflops or (gpu and peak_tflops(gpu["name"]))
        env["peak_bf16_tflops"] = self.peak_tflops
        missing = sorted(name for name, version in packages.items() if version is None)
        device = f"{gpu['name']}, {gpu['memory_gib']:.1f} GiB, bf16 {'yes' if gpu['bf16'] else 'no'}" if gpu else "no GPU"
        headline = (
            f"{device}; torch {env['torch']} (CUDA {env['cuda']}), accelerate {packages['accelerate']}, "
            f"python {env['python']}; missing: {', '.join(missing) or 'none'}"
        )
        passed = gpu is not None or self.plan.device == "cpu"
        return self.finished(outcome, passed, env, headline, reason=None if passed else "no CUDA GPU visible")

    def step_data(self, budget: float) -> dict:
        command = [sys.executable, "-m", "cvae_dist.data.synthetic", "--root", str(self.work / "data"), *self.plan.data]
        outcome = self.run("data", command, budget)
        return self.finished(
            outcome, outcome.returncode == 0, {"flags": self.plan.data}, f"python -m cvae_dist.data.synthetic {' '.join(self.plan.data)}"
        )

    def step_bench(self, budget: float) -> dict:
        path = self.out / "bench.json"
        peak = ["--peak_tflops", str(self.peak_tflops)] if self.peak_tflops else []
        command = [
            sys.executable,
            str(REPO / "benchmarks" / "bench.py"),
            *self.plan.bench,
            *peak,
            "--data",
            str(self.work / "bench-data"),
            "--json",
            str(path),
        ]
        outcome = self.run("bench", command, budget)
        if not path.is_file():
            return self.finished(outcome, False, {}, "no rows")
        report = json.loads(path.read_text())
        rows = [Row(**r) for r in report["rows"]]
        best = max((r for r in rows if r.notes.get("best") and r.notes.get("teacher_forcing")), key=lambda r: r.frames_per_s, default=None)
        summary = report["summary"]
        parts = [f"{len(rows)} rows" + ("" if report["finished"] else ", stopped early")]
        if best:
            parts.append(f"best {best.frames_per_s:,.0f} frames/s ({best.name.removeprefix('cvae_dist, ')})")
        if "full_epoch_seconds" in summary:
            parts.append(f"full epoch {summary['full_epoch_seconds']:.2f} s")
        if "share_of_peak" in summary:
            parts.append(f"{summary['share_of_peak']:.0%} of {self.peak_tflops:g} TFLOP/s")
        if "best_speedup_over_course_loop" in summary:
            parts.append(f"{summary['best_speedup_over_course_loop']:.1f}x the course loop")
        if report["out_of_memory"]:
            parts.append(f"out of memory: {'; '.join(report['out_of_memory'])}")
        return self.finished(outcome, outcome.returncode == 0 and report["finished"], report, "; ".join(parts))

    def step_train(self, budget: float) -> dict:
        flags = self.train_flags("train", "--num_epoch", "100000")  # stopped by SIGTERM long before
        with GpuMemoryPeak(self.plan.device == "cuda") as memory:
            outcome = self.run("train", self.launch("rtx.yaml", self.plan.rtx_launch, flags), budget, self.plan.train_seconds)
        stopped = re.search(r"stopped by SIGTERM after step (\d+): checkpoint (\S+);", outcome.text)
        run = scalars(self.work / "runs" / "train")
        results = {
            "trained_s": outcome.signalled_after_s,
            "steps": int(stopped.group(1)) if stopped else None,
            "epochs": latest_manifest(self.work / "runs" / "train").get("epoch"),
            "frames_per_step": self.plan.frames_per_step,
            **training_rates(run.get("train/loss", []), self.plan.frames_per_step),
            "peak_gpu_mib": memory.peak_mib,
            "validations": len(run.get("val/psnr", [])),
            "val_psnr": last(run.get("val/psnr", [])),
            "val_baseline_psnr": last(run.get("val/baseline_psnr", [])),
            "val_best_psnr": last(run.get("val/best_psnr", [])),
        }
        passed = bool(stopped) and stopped.group(2) != "None"
        headline = (
            f"{results['steps']} steps in {results['trained_s'] or 0:.0f} s of training, "
            f"{results.get('frames_per_s', 0):,.0f} frames/s (median), {memory_text(results['peak_gpu_mib'])}; "
            f"last validation (of {results['validations']}): {psnr_text(results['val_psnr'], results['val_baseline_psnr'])}"
        )
        return self.finished(outcome, passed, results, headline, reason=None if passed else "no preemption checkpoint")

    def step_resume(self, budget: float) -> dict:
        save_root = self.work / "runs" / "train"
        before = latest_manifest(save_root)
        # Two more epochs: at least one whole epoch, even when the stop came at an epoch's last step.
        flags = self.train_flags("train", "--num_epoch", str(before["epoch"] + 2), "--resume_from_checkpoint", "latest")
        with GpuMemoryPeak(self.plan.device == "cuda") as memory:
            outcome = self.run("resume", self.launch("rtx.yaml", self.plan.rtx_launch, flags), budget)
        resumed = re.search(r"resumed from \S+ at epoch (\d+), step (\d+)", outcome.text)
        run = scalars(save_root)
        results = {
            "resumed_at_step": before["step"],
            "steps": latest_manifest(save_root)["step"] - before["step"],
            "final_psnr": last(run.get("final/psnr", [])),
            "final_baseline_psnr": last(run.get("final/baseline_psnr", [])),
            "peak_gpu_mib": memory.peak_mib,
        }
        passed = outcome.returncode == 0 and bool(resumed) and int(resumed.group(2)) == before["step"]
        headline = (
            f"resumed at step {before['step']}, {results['steps']} more steps; best weights: "
            f"{psnr_text(results['final_psnr'], results['final_baseline_psnr'])}; {memory_text(results['peak_gpu_mib'])}"
        )
        return self.finished(outcome, passed, results, headline)

    def short_run(self, name: str, config: str, launch_flags: list[str], budget: float) -> tuple[Outcome, dict]:
        """One short epoch through `accelerate launch` with `config`; what its events say."""
        flags = self.train_flags(name, "--num_epoch", "1", *self.plan.short)
        with GpuMemoryPeak(self.plan.device == "cuda") as memory:
            outcome = self.run(name, self.launch(config, launch_flags, flags), budget)
        run = scalars(self.work / "runs" / name)
        losses = [value for _, _, value in run.get("train/loss", [])]
        setup = re.search(r"world size \d+ \((?P<distributed>\w+), (?P<device>\w+), mixed precision (?P<precision>\w+)\)", outcome.text)
        return outcome, {
            **(setup.groupdict() if setup else {"distributed": None, "device": None, "precision": None}),
            "steps": len(losses),
            "losses_finite": bool(losses) and all(math.isfinite(v) for v in losses),
            "nonfinite_steps_skipped": int(last(run.get("train/nonfinite_steps", []), 0)),
            "final_psnr": last(run.get("final/psnr", [])),
            "final_baseline_psnr": last(run.get("final/baseline_psnr", [])),
            "peak_gpu_mib": memory.peak_mib,
        }

    def step_fp16(self, budget: float) -> dict:
        outcome, results = self.short_run("fp16", "rtx.yaml", [*self.plan.rtx_launch, "--mixed_precision", "fp16"], budget)
        passed = outcome.returncode == 0 and results["losses_finite"]
        headline = (
            f"mixed precision {results['precision']} on {results['device']}: {results['steps']} steps, losses {'all finite' if results['losses_finite'] else 'NOT finite'}, "
            f"{results['nonfinite_steps_skipped']} overflowing steps skipped by the loss scaler; {memory_text(results['peak_gpu_mib'])}"
        )
        if self.plan.device == "cpu":
            headline += " (CPU form: fp16 autocast does nothing on a CPU, it trained in fp32)"
        return self.finished(outcome, passed, results, headline)

    def step_deepspeed(self, budget: float) -> dict:
        packages = self.environment.get("packages")
        if packages is not None and not packages["deepspeed"]:  # without step 1's answer, trying is the way to know
            return {"status": "skipped", "reason": "deepspeed not installed", "headline": "not installed", "results": {}}
        launch_flags = ["--num_processes", "1", "--main_process_port", str(free_port())]
        outcome, results = self.short_run("deepspeed", "deepspeed_zero2.yaml", launch_flags, budget)
        passed = outcome.returncode == 0 and results["distributed"] == "DEEPSPEED" and results["losses_finite"]
        headline = (
            f"ZeRO-2 ({results['distributed']}), mixed precision {results['precision']} on {results['device']}: {results['steps']} steps, losses {'all finite' if results['losses_finite'] else 'NOT finite'}; "
            f"best weights: {psnr_text(results['final_psnr'], results['final_baseline_psnr'])}; {memory_text(results['peak_gpu_mib'])}"
        )
        return self.finished(outcome, passed, results, headline)

    # -- the whole --

    NEEDS = {"train": "data", "resume": "train", "fp16": "data", "deepspeed": "data"}

    def budget_of(self, name: str) -> float:
        return min(self.plan.budgets[name], self.deadline - time.monotonic())

    def run_step(self, name: str) -> None:
        began, budget = time.monotonic(), self.budget_of(name)
        needed = self.NEEDS.get(name)
        if name in self.plan.skip:
            record = {"status": "skipped", "reason": self.plan.skip[name]}
        elif needed and self.status(needed) != "ok":
            record = {"status": "skipped", "reason": f"needs the {needed} step, which did not pass"}
        elif budget < MIN_STEP_S:
            record = {"status": "skipped", "reason": f"no time left of the check's {self.plan.total_s:.0f} s"}
        else:
            try:
                record = getattr(self, f"step_{name}")(budget)
            except Exception as err:  # noqa: BLE001 - a step's own error is its result; the next steps still run
                record = {"status": "failed", "reason": f"{type(err).__name__}: {err}", "tail": traceback.format_exc().splitlines()[-15:]}
        self.steps.append({"step": name, "budget_s": round(max(budget, 0)), "seconds": round(time.monotonic() - began, 1), **record})
        self.write()
        print(f"{name}: {record['status']} in {self.steps[-1]['seconds']:.0f} s", flush=True)

    def report(self) -> dict:
        return {
            "mode": "dry run (CPU)" if self.plan.device == "cpu" else "GPU",
            "seconds": round(time.monotonic() - self.started, 1),
            "total_budget_s": self.plan.total_s,
            "environment": self.environment,
            "steps": self.steps,
        }

    def write(self) -> None:
        report = self.report()
        (self.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        (self.out / "gpu_check.md").write_text(markdown(report))


STEPS = ("environment", "data", "bench", "train", "resume", "fp16", "deepspeed")


def markdown(report: dict) -> str:
    lines = [
        f"# cvae_dist GPU check: {report['mode']}",
        "",
        f"{len(report['steps'])} of {len(STEPS)} steps in {report['seconds']:.0f} s (budget {report['total_budget_s']:.0f} s).",
        "",
        "| step | status | seconds | budget | result |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for step in report["steps"]:
        result = step.get("headline") or step.get("reason", "")
        if step["status"] != "ok" and step.get("headline"):
            result += f" ({step['reason']})"
        lines.append(f"| {step['step']} | {step['status']} | {step['seconds']:.0f} | {step['budget_s']} | {result} |")
    bench = next((s for s in report["steps"] if s["step"] == "bench" and s.get("results", {}).get("rows")), None)
    if bench:
        results = bench["results"]
        lines += ["", f"Bench (`{results['command']}`):", "", "```", table([Row(**r) for r in results["rows"]])]
        lines += [f"{key}: {value:,.3g}" for key, value in results["summary"].items()]
        lines += ["```"]
    for step in report["steps"]:
        if step.get("tail"):
            lines += ["", f"Last lines of {step['step']} ({step.get('log', 'traceback')}):", "", "```", *step["tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    doc = __doc__.split("\n\n", 2)
    parser = argparse.ArgumentParser(
        description=doc[0],
        epilog=doc[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=doc[1].strip().replace("benchmarks/gpu_check.sh", "%(prog)s"),
    )
    parser.add_argument("out", type=Path, help="folder for gpu_check.json, gpu_check.md, bench.json and logs/ (made if missing)")
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU with the tiny preset and tiny data (a minute or two)")
    parser.add_argument(
        "--peak_tflops",
        type=float,
        help="the GPU's dense bf16 peak in TFLOP/s (default: from its name, " + ", ".join(f"{k} {v:g}" for k, v in PEAK_BF16_TFLOPS if v) + ")",
    )
    args = parser.parse_args(argv)
    plan = DRY_RUN if args.dry_run else GPU
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        check = Check(plan, args.out, Path(work), args.peak_tflops)
        for name in STEPS:
            check.run_step(name)
    print(f"report: {args.out / 'gpu_check.md'}")
    return 0 if all(s["status"] in ("ok", "skipped") for s in check.steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""One GPU acceptance run of cvae_dist: every GPU path measured in one call of under 7 minutes.

    benchmarks/gpu_check.sh OUT [--dry-run] [--steps STEP,...] [--peak_tflops P]

The steps run in order, each in its own processes under a time budget. A step that fails, or
overruns and is stopped, is recorded with the last lines of its output and what to run next, and
the next step runs:

  environment  GPU, memory, torch/CUDA/accelerate versions, bf16 support, which optional packages import
  data         the synthetic dataset of the training steps (python -m cvae_dist.data.synthetic)
  bench        benchmarks/bench.py --sections train: the course's loop against cvae_dist, fp32 and
               bf16, batch sizes up to the largest that fits; a row that takes too long after the
               one before stops the bench, which keeps the rows it measured
  train        accelerate launch --config_file accelerate_configs/rtx.yaml cvae_dist/train.py, lab
               preset, bf16; stopped by SIGTERM (the preemption path) a fixed time after training starts
  resume       the same run resumed from that checkpoint for two more epochs, then its final evaluation
  fp16         mixed precision fp16 (loss scaling) for one short epoch: every logged loss finite
  deepspeed    accelerate_configs/deepspeed_zero2.yaml on one process for one short epoch, when
               deepspeed imports ("not installed" otherwise)
  compile      the bench's best setting under torch.compile, last and with a budget of its own, so
               that a slow first compile costs no other step its time

--steps runs a subset, in this order, with the steps they need added: train and fp16 and
deepspeed need data, resume needs train, compile needs bench (its best setting), and the
environment step always runs (it finds the GPU's peak and whether deepspeed is installed).

What each step reports is read from the runs' TensorBoard events (cvae_dist.events), their
checkpoints' manifests and the bench's JSON, never from their printed output.

Writes three files into OUT: gpu_check.json (everything), gpu_check.md (its tables go into
docs/benchmarks.md; printed at the end) and gpu_check.log (every step's output, each cut to its
first and last lines past 1 MiB); the report is rewritten after every step. Datasets and runs go
to a folder in /dev/shm when it has room, else in the temporary folder, never under OUT, and are
deleted at the end. Exit status 0 when every step passed or was skipped for a stated reason, else 1.

--dry-run runs the same steps on the CPU with the tiny preset and tiny data, in a few minutes on
a quiet machine. fp16 then trains in fp32 (fp16 autocast does nothing on a CPU), the compile step
uses torch.compile's eager backend (inductor would compile C++ for minutes), and the DeepSpeed
step is skipped: on a CPU, DeepSpeed first spends minutes compiling an op of its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import REPO, MiB, Row, table

# Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA's datasheets), by the name torch reports; the
# first entry the name contains wins. NVL cards run at other clocks: their figure is not assumed.
PEAK_BF16_TFLOPS = (("NVL", None), ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))
OPTIONAL_PACKAGES = "accelerate transformers safetensors tensorboard imageio PIL numpy yaml tqdm matplotlib huggingface_hub psutil deepspeed".split()
STEPS = ("environment", "data", "bench", "train", "resume", "fp16", "deepspeed", "compile")
NEEDS = {"train": "data", "resume": "train", "fp16": "data", "deepspeed": "data", "compile": "bench"}
ALWAYS = "environment"  # run whatever --steps says: the GPU's peak, and whether deepspeed imports
STOP_RESERVE_S = 20  # what the trainer may need after SIGTERM: finish its step, save the checkpoint
MIN_STEP_S = 5
LOG = "gpu_check.log"
LOG_PER_STEP = MiB  # eight steps' output stays far below the 16 MiB a file of the bundle may have

# The machine lent for the check is held 15 minutes, its start and a retry included: the check
# itself must end within WALL_LIMIT_S. A step stopped at its budget takes up to GRACE_S more
# (common.stop_group: SIGTERM, 5 s, SIGKILL, 5 s); START_RESERVE_S covers what runs outside the
# steps' clock: bash and the check's Python starting, and its work after the last step (the
# compile step's summary imports torch to count FLOPs).
WALL_LIMIT_S = 420
GRACE_S = 10
START_RESERVE_S = 10
LENT_MACHINE_LACKS = {"deepspeed": "deepspeed is not installed on the lent machine: the step is skipped in no time"}
"""Steps that the lent machine skips at once; their budgets only count where they run."""
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Plan:
    """Everything the GPU run and the CPU dry run do differently."""

    device: str
    data: list[str]
    """Flags of `python -m cvae_dist.data.synthetic` besides --root."""
    run: list[str]
    """cvae_dist/train.py flags of every training step."""
    short: list[str]
    """Added for the fp16 and DeepSpeed steps: one short epoch, with the data path the train step does not
    take (it takes --data_on_device auto: the windows on the device on a GPU, loader workers on a CPU)."""
    rtx_launch: list[str]
    """accelerate launch flags after --config_file accelerate_configs/rtx.yaml."""
    bench: list[str]
    bench_row_s: float
    """Seconds a bench row may take after the row before it (the bench then stops, keeping its rows);
    until the first row, only the step's budget applies (process start, the bench's dataset)."""
    compile: list[str]
    """benchmarks/bench.py flags of the compile step, besides the best setting's batch and precision."""
    train_seconds: float
    """How long the train step trains before it is sent SIGTERM."""
    env: dict[str, str]
    """Set for every step's processes."""
    budgets: dict[str, float]
    """Seconds each step may take before it is stopped."""
    total_s: float
    """Seconds the whole check may take: a step gets at most what is left of it."""
    work_bytes: int
    """Free space the datasets and runs need: /dev/shm is used only when it has this much."""
    skip: dict[str, str] = field(default_factory=dict)
    """Steps not run, and why."""

    @property
    def frames_per_step(self) -> int:
        """Predicted frames per optimizer step of the train step: batch x (window - 1)."""
        return int(self.run[self.run.index("--batch_size") + 1]) * (int(self.run[self.run.index("--train_vi_len") + 1]) - 1)


# Only the validation video is read by training (the test split, five sequences of 630 labels by
# default, would be a third of the frames to render): one test sequence of two frames.
NO_TEST_SPLIT = "--test-sequences 1 --test-frames 2".split()

GPU = Plan(
    device="cuda",
    # 6,400 frames (400 windows of 16) and the 630 of the validation video render in seconds on
    # 16 cores, at twice the model's size as in the bench.
    data=["--train-frames", "6400", "--height", "64", "--width", "128", *NO_TEST_SPLIT],
    # The demo's recipe (autoregressive from the start, beta fixed at 1) on the lab network; a
    # validation rollout of 630 frames every 10 epochs of 12 steps, so that it costs a few percent.
    run=(
        "--preset lab --train_vi_len 16 --batch_size 32 --tfr 0 --kl_anneal_type Without --lr_milestones "
        "--log_every 10 --eval_every 10 --per_save 10 --checkpoints_total_limit 2"
    ).split(),
    short="--partial 0.5 --batch_size 16 --log_every 1 --val_vi_len 64 --data_on_device off".split(),
    rtx_launch=[],
    # The bench's GPU dataset has 128 training windows of 16 frames: batch 256 could only be a
    # skipped row, built (a few seconds) for nothing.
    bench="--device cuda --sections train --batches 2,16,64,128 --repeats 5".split(),
    # A row is expected in under 10 s (batch 128 in fp32: 8 steps of ~0.5 s, and building the
    # run's parts); 25 s is for a first use of a kernel, not for a stuck one.
    bench_row_s=25,
    compile="--device cuda --sections compile --repeats 5".split(),
    # Enough for a median throughput over tens of logged intervals and a validation or two; the
    # train step is there to measure and to be preempted, not to train.
    train_seconds=40,
    env={},
    # Each is the step's expected time on an H100 with room for a cold machine (docs/benchmarks.md
    # gives the reasoning). Without deepspeed (LENT_MACHINE_LACKS) they sum to total_s.
    budgets={"environment": 20, "data": 15, "bench": 75, "train": 80, "resume": 75, "fp16": 40, "deepspeed": 40, "compile": 95},
    total_s=WALL_LIMIT_S - GRACE_S - START_RESERVE_S,
    work_bytes=2 * 2**30,
)

DRY_RUN = Plan(
    device="cpu",
    data=["--train-frames", "64", "--height", "32", "--width", "64", "--val-frames", "16", *NO_TEST_SPLIT],
    run=(
        "--preset tiny --train_vi_len 4 --val_vi_len 8 --batch_size 2 --tfr 0 --kl_anneal_type Without --lr_milestones "
        "--log_every 1 --eval_every 1 --per_save 1 --checkpoints_total_limit 2 --bn_recalibration_windows 4"
    ).split(),
    short="--partial 0.25 --data_on_device on".split(),
    # bf16 on a CPU is many times slower than fp32 for the tiny network; --cpu keeps a dry run off a GPU.
    rtx_launch=["--cpu", "--mixed_precision", "no"],
    # Batch 64 is more than the quick data's 32 windows: the bench lists it as skipped and goes on.
    bench="--device cpu --quick --sections train --batches 2,64 --precisions fp32 --repeats 1".split(),
    bench_row_s=90,
    compile="--device cpu --quick --sections compile --repeats 1 --compile_backend eager".split(),
    train_seconds=8,
    # The CPU only; one thread per process, since torch's default of a thread per core makes
    # processes that share a small machine wait on each other's threads many times over.
    env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    # Generous: the suite runs it on 2 cores that other work shares.
    budgets={"environment": 60, "data": 90, "bench": 180, "train": 120, "resume": 120, "fp16": 120, "deepspeed": 0, "compile": 180},
    total_s=780,
    work_bytes=256 * MiB,
    skip={
        "deepspeed": "dry run: DeepSpeed on a CPU compiles its shared-memory op with g++ on first use (a minute of CPU on 2 cores, "
        "unless `scripts/setup.sh dev` compiled it); tests/test_deepspeed.py runs ZeRO on a CPU"
    },
)


def with_needs(asked: list[str]) -> list[str]:
    """The steps to run for `asked`, in the check's order: with the environment step and, transitively,
    the steps each needs (a prerequisite always comes earlier in STEPS)."""
    chosen = {ALWAYS, *asked}
    for name in reversed(STEPS):
        if name in chosen and name in NEEDS:
            chosen.add(NEEDS[name])
    return [name for name in STEPS if name in chosen]


def work_parent(out: Path, need: int, shm: Path = SHM, fallback: str | None = None) -> tuple[Path, str]:
    """Where the datasets and runs go, never in OUT: /dev/shm (memory) when it is there, writable and
    has `need` bytes free, else the temporary folder; the folder and why it was taken."""
    out = out.resolve()
    fallback = Path(fallback or tempfile.gettempdir()).resolve()

    def outside_out(folder: Path) -> bool:
        return folder != out and out not in folder.parents

    if shm.is_dir() and os.access(shm, os.W_OK) and outside_out(shm.resolve()):
        free = shutil.disk_usage(shm).free
        if free >= need:
            return shm, f"{shm} (memory, {free / 2**30:.1f} GiB free)"
        why = f"{shm} has {free / 2**30:.1f} GiB free, {need / 2**30:.2g} GiB needed"
    else:
        why = f"{shm} is missing, read-only or in OUT"
    if not outside_out(fallback):
        raise SystemExit(f"gpu_check: {why}, and the temporary folder {fallback} is in OUT {out}: set TMPDIR elsewhere")
    return fallback, f"{fallback} (the temporary folder: {why})"


def peak_tflops(gpu_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in gpu_name), None)


def write_environment(path: str) -> None:
    """The machine as JSON. In a process of its own, so that the check never holds a CUDA context
    (memory the bench's largest batch could use) and a broken install fails only this step."""
    import importlib

    info = {**common.machine(), "packages": {}}
    for name in OPTIONAL_PACKAGES:
        try:
            info["packages"][name] = getattr(importlib.import_module(name), "__version__", "imported")
        except Exception as err:  # noqa: BLE001 - a package that fails to import in any way is reported, not fatal
            info["packages"][name] = None
            info.setdefault("import_errors", {})[name] = f"{type(err).__name__}: {err}"
    Path(path).write_text(json.dumps(info, indent=2))


@dataclass
class StopTraining:
    """Watches a training command: SIGTERM to its trainer `seconds` after training starts (its event
    file appears once its stop-signal handler is installed), or sooner if the budget would not leave
    it time to save. Only to the trainer: some accelerate versions' launchers die of SIGTERM without
    passing it on, others kill the trainer 5 s later, before its checkpoint is safe."""

    save_root: Path
    seconds: float
    budget: float
    started_at: float | None = None
    signalled_after_s: float | None = None

    def __call__(self, launcher, elapsed: float) -> None:
        from cvae_dist.events import EVENT_FILES
        from cvae_dist.tracking import TB_PROJECT

        if self.signalled_after_s is not None:
            return
        if self.started_at is None and any((self.save_root / TB_PROJECT).glob(EVENT_FILES)):
            self.started_at = elapsed
        if (self.started_at is not None and elapsed - self.started_at >= self.seconds) or elapsed >= self.budget - STOP_RESERVE_S:
            for pid in common.children(launcher.pid):
                os.kill(pid, signal.SIGTERM)
            self.signalled_after_s = elapsed - (self.started_at if self.started_at is not None else elapsed)


@dataclass
class BenchRows:
    """Watches a bench run's JSON, which it rewrites after every row: stops the bench (its process
    group) when no row follows the one before within `row_s` seconds, so that one slow row cannot
    take the step's whole budget. Keeps the last JSON that parsed, since a bench stopped in the
    middle of writing it leaves it cut."""

    path: Path
    row_s: float
    report: dict = field(default_factory=dict)
    rows: int = 0
    last_row_at: float | None = None
    stopped_after_s: float | None = None

    def read(self) -> dict:
        try:
            self.report = json.loads(self.path.read_text())
        except (OSError, ValueError):
            pass  # not written yet, or being written: the last one read stands
        return self.report

    def __call__(self, bench, elapsed: float) -> None:
        rows = len(self.read().get("rows", []))
        if rows != self.rows:
            self.rows, self.last_row_at = rows, elapsed
        elif self.last_row_at is not None and elapsed - self.last_row_at > self.row_s and self.stopped_after_s is None:
            self.stopped_after_s = elapsed - self.last_row_at
            common.stop_group(bench)


def best_setting(bench: dict) -> Row | None:
    """The bench's best cvae_dist setting with teacher forcing: the row it marked, or where it was
    stopped before marking one, its fastest measured row."""
    rows = [Row(**r) for r in bench.get("rows", []) if r["section"] == "train"]
    candidates = common.measured(rows, "cvae_dist", best=True, teacher_forcing=True) or common.measured(rows, "cvae_dist", teacher_forcing=True)
    return max(candidates, key=lambda r: r.frames_per_s, default=None)


def latest_manifest(save_root: Path) -> dict:
    from cvae_dist import checkpoint as ckpt

    found = ckpt.list_checkpoints(save_root)
    return json.loads((found[-1] / ckpt.MANIFEST).read_text()) if found else {}


def training_rates(losses: list, frames_per_step: int) -> dict:
    """Frames/s between consecutive logged losses: the median (steady training; the few intervals
    holding a validation or a checkpoint are outliers) and the overall mean."""
    rates = [(b.step - a.step) * frames_per_step / (b.wall_time - a.wall_time) for a, b in zip(losses, losses[1:]) if b.wall_time > a.wall_time]
    if not rates:
        return {}
    overall = (losses[-1].step - losses[0].step) * frames_per_step / (losses[-1].wall_time - losses[0].wall_time)
    return {"frames_per_s": statistics.median(rates), "frames_per_s_overall": overall}


def memory_text(peak_mib: int | None) -> str:
    return f"peak {peak_mib:,} MiB on the GPU" if peak_mib is not None else "no GPU memory figure"


def psnr_text(psnr: float | None, baseline: float | None) -> str:
    return "no validation yet" if psnr is None else f"PSNR {psnr:.2f} dB vs copy-first {baseline:.2f} dB"


def finite_text(finite: bool) -> str:
    return "losses all finite" if finite else "losses NOT finite"


@dataclass
class Check:
    plan: Plan
    out: Path
    work: Path
    peak_tflops: float | None
    steps: list[dict] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    selected: list[str] = field(default_factory=lambda: list(STEPS))
    """The steps this check runs (--steps and what they need)."""
    asked: list[str] | None = None
    """--steps as given; None: every step."""
    work_where: str = ""
    """Where the work folder is, and why there."""
    commands: dict[str, list[list[str]]] = field(default_factory=dict)
    """The commands each step ran."""

    def __post_init__(self):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / LOG).write_text("")

    # -- plumbing --

    def run(self, name: str, command: list[str], budget: float, watch: StopTraining | BenchRows | None = None) -> common.Outcome:
        """`command` with its output appended to the log, stopped at `budget` seconds."""
        # Unbuffered: the log is what a stopped step leaves.
        env = common.repo_env(PYTHONUNBUFFERED="1", **self.plan.env)
        self.commands.setdefault(name, []).append(command)
        return common.run_logged(name, command, self.out / LOG, budget, env, watch, keep_bytes=LOG_PER_STEP)

    def launch(
        self, name: str, config: str, launch_flags: list[str], flags: list[str], budget: float, watch=None
    ) -> tuple[common.Outcome, int | None]:
        """A training step through `accelerate launch`; how it ended, and the GPU memory it used at most (MiB)."""
        with common.GpuMemoryPeak(self.plan.device == "cuda") as memory:
            outcome = self.run(name, common.accelerate_launch(config, launch_flags, flags), budget, watch)
        return outcome, memory.peak_mib

    def train_flags(self, name: str, *extra: str) -> list[str]:
        return ["--DR", str(self.work / "data"), "--save_root", str(self.work / "runs" / name), *self.plan.run, *extra]

    def step(self, name: str) -> dict:
        return next((s for s in self.steps if s["step"] == name), {})

    def shown(self, command: list[str] | str) -> str:
        """A command as one types it in the repository: `python`, `accelerate launch`, paths relative
        to the repository, $WORK for the work folder (deleted when the check ends)."""
        text = command if isinstance(command, str) else shlex.join(command)
        launcher = shlex.join([sys.executable, "-m", "accelerate.commands.launch"])
        for real, alias in ((str(self.work), "$WORK"), (launcher, "accelerate launch"), (shlex.quote(sys.executable), "python"), (f"{REPO}/", "")):
            text = text.replace(real, alias)
        return text

    @staticmethod
    def finished(outcome: common.Outcome, passed: bool, results: dict, headline: str, reason: str | None = None, timed_out: bool = False) -> dict:
        status = "timed out" if outcome.returncode is None or timed_out else "ok" if passed else "failed"
        record = {"status": status, "results": results, "headline": headline, "log": LOG}
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

    def run_bench(self, name: str, flags: list[str], budget: float) -> tuple[common.Outcome, dict, BenchRows]:
        """benchmarks/bench.py with these flags, stopped where a row takes over the plan's bench_row_s;
        its JSON report as last written ({} where it wrote none, `finished` false where stopped)."""
        path = self.work / f"{name}.json"
        peak = ["--peak_tflops", str(self.peak_tflops)] if self.peak_tflops else []
        command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), *flags, *peak, "--data", str(self.work / "bench-data"), "--json", str(path)]
        watch = BenchRows(path, self.plan.bench_row_s)
        outcome = self.run(name, command, budget, watch)
        report = watch.read()
        if report.get("command"):
            report["command"] = self.shown(report["command"])
        return outcome, report, watch

    def bench_stop(self, watch: BenchRows) -> str | None:
        if watch.stopped_after_s is None:
            return None
        return f"stopped: row {watch.rows + 1} took over {self.plan.bench_row_s:g} s, the limit of a row"

    def step_bench(self, budget: float) -> dict:
        outcome, report, watch = self.run_bench("bench", self.plan.bench, budget)
        stop = self.bench_stop(watch)
        if not report.get("rows"):
            return self.finished(outcome, False, report, "no rows", reason=stop, timed_out=stop is not None)
        passed = outcome.returncode == 0 and report["finished"]
        return self.finished(outcome, passed, report, bench_headline(report, self.peak_tflops), reason=stop, timed_out=stop is not None)

    def step_compile(self, budget: float) -> dict:
        eager = self.step("bench")["results"]
        best = best_setting(eager)
        setting = ["--batches", str(best.notes["batch"]), "--precisions", common.precision_name(best.notes["precision"])]
        outcome, report, watch = self.run_bench("compile", [*self.plan.compile, *setting], budget)
        if not report.get("rows"):
            return self.finished(outcome, False, report, "no rows", reason=self.bench_stop(watch))
        compiled = Row(**report["rows"][0])
        rows = [Row(**r) for r in eager["rows"] + report["rows"]]
        report["summary"] = common.summary(rows, eager["settings"]["preset"], eager["settings"]["window"], self.peak_tflops)
        if compiled.skipped:
            return self.finished(outcome, False, report, compiled.name, reason=compiled.skipped)
        speed = f"{compiled.name}: {compiled.frames_per_s:,.0f} frames/s, {compiled.frames_per_s / best.frames_per_s:.2f}x eager"
        headline = "; ".join([speed, *summary_parts(report["summary"], self.peak_tflops)])
        return self.finished(outcome, outcome.returncode == 0 and report["finished"], report, headline)

    def step_train(self, budget: float) -> dict:
        from cvae_dist import events
        from cvae_dist.tracking import TRAIN, VAL

        save_root = self.work / "runs" / "train"
        flags = self.train_flags("train", "--num_epoch", "100000")  # stopped by SIGTERM long before
        watch = StopTraining(save_root, self.plan.train_seconds, budget)
        outcome, peak_mib = self.launch("train", "rtx.yaml", self.plan.rtx_launch, flags, budget, watch)
        run, checkpoint = events.read_run(save_root), latest_manifest(save_root)
        stopped = checkpoint.get("reason") == "preemption"
        validations = run.scalars.get(VAL.psnr, [])
        results = {
            "trained_s": watch.signalled_after_s,
            "steps": checkpoint.get("step") if stopped else None,
            "epochs": checkpoint.get("epoch"),
            "frames_per_step": self.plan.frames_per_step,
            **training_rates(run.scalars.get(TRAIN.loss, []), self.plan.frames_per_step),
            "peak_gpu_mib": peak_mib,
            "validations": len(validations),
            "val_psnr": run.last(VAL.psnr),
            "val_baseline_psnr": run.last(VAL.baseline_psnr),
            "val_best_psnr": run.last(VAL.best_psnr),
        }
        headline = (
            f"{results['steps']} steps in {results['trained_s'] or 0:.0f} s of training, "
            f"{results.get('frames_per_s', 0):,.0f} frames/s (median), {memory_text(results['peak_gpu_mib'])}; "
            f"last validation (of {len(validations)}): {psnr_text(results['val_psnr'], results['val_baseline_psnr'])}"
        )
        return self.finished(outcome, stopped, results, headline, reason=None if stopped else "no preemption checkpoint")

    def step_resume(self, budget: float) -> dict:
        from cvae_dist import events
        from cvae_dist.tracking import FINAL, TRAIN

        save_root = self.work / "runs" / "train"
        before, began = latest_manifest(save_root), time.time()
        # Two more epochs: at least one whole epoch, even when the stop came at an epoch's last step.
        flags = self.train_flags("train", "--num_epoch", str(before["epoch"] + 2), "--resume_from_checkpoint", "latest")
        outcome, peak_mib = self.launch("resume", "rtx.yaml", self.plan.rtx_launch, flags, budget)
        run = events.read_run(save_root)
        logged = [e.step for e in run.scalars.get(TRAIN.loss, []) if e.wall_time >= began]
        results = {
            "resumed_at_step": before["step"],
            "first_logged_step": min(logged, default=None),
            "steps": latest_manifest(save_root)["step"] - before["step"],
            "final_psnr": run.last(FINAL.psnr),
            "final_baseline_psnr": run.last(FINAL.baseline_psnr),
            "peak_gpu_mib": peak_mib,
        }
        # A run that started over instead would log its first steps again.
        passed = outcome.returncode == 0 and bool(logged) and min(logged) > before["step"]
        headline = (
            f"resumed at step {before['step']}, {results['steps']} more steps; best weights: "
            f"{psnr_text(results['final_psnr'], results['final_baseline_psnr'])}; {memory_text(results['peak_gpu_mib'])}"
        )
        return self.finished(outcome, passed, results, headline)

    def short_run(self, name: str, config: str, launch_flags: list[str], precision: str, budget: float) -> tuple[common.Outcome, dict]:
        """One short epoch through `accelerate launch` with `config`; what its events and checkpoint say."""
        from cvae_dist import checkpoint as ckpt
        from cvae_dist import events
        from cvae_dist.tracking import FINAL, NONFINITE_STEPS, TRAIN

        save_root = self.work / "runs" / name
        flags = self.train_flags(name, "--num_epoch", "1", "--mixed_precision", precision, *self.plan.short)
        outcome, peak_mib = self.launch(name, config, launch_flags, flags, budget)
        run, found = events.read_run(save_root), ckpt.list_checkpoints(save_root)
        losses = [e.value for e in run.scalars.get(TRAIN.loss, [])]
        return outcome, {
            "precision": run.hparams.get("mixed_precision"),
            "device": self.plan.device,
            "steps": len(losses),
            "losses_finite": bool(losses) and all(math.isfinite(v) for v in losses),
            "nonfinite_steps_skipped": int(run.last(NONFINITE_STEPS) or 0),
            # DeepSpeed's own checkpoint format: ZeRO's optimizer state, one shard per process.
            "zero_shards": len(list(found[-1].glob("pytorch_model/*optim_states.pt"))) if found else 0,
            "final_psnr": run.last(FINAL.psnr),
            "final_baseline_psnr": run.last(FINAL.baseline_psnr),
            "peak_gpu_mib": peak_mib,
        }

    def step_fp16(self, budget: float) -> dict:
        outcome, results = self.short_run("fp16", "rtx.yaml", self.plan.rtx_launch, "fp16", budget)
        passed = outcome.returncode == 0 and results["losses_finite"]
        headline = (
            f"mixed precision {results['precision']} on {results['device']}: {results['steps']} steps, {finite_text(results['losses_finite'])}, "
            f"{results['nonfinite_steps_skipped']} overflowing steps skipped by the loss scaler; {memory_text(results['peak_gpu_mib'])}"
        )
        if self.plan.device == "cpu":
            headline += " (CPU form: fp16 autocast does nothing on a CPU, it trained in fp32)"
        return self.finished(outcome, passed, results, headline)

    def step_deepspeed(self, budget: float) -> dict:
        packages = self.environment.get("packages")
        if packages is not None and not packages["deepspeed"]:  # without step 1's answer, trying is the way to know
            return {"status": "skipped", "reason": "deepspeed not installed", "headline": "not installed", "results": {}}
        launch_flags = ["--num_processes", "1", "--main_process_port", str(common.free_port())]
        outcome, results = self.short_run("deepspeed", "deepspeed_zero2.yaml", launch_flags, "bf16", budget)
        passed = outcome.returncode == 0 and results["zero_shards"] > 0 and results["losses_finite"]
        headline = (
            f"ZeRO-2 ({results['zero_shards']} optimizer shard(s) in its checkpoint), mixed precision {results['precision']} on {results['device']}: "
            f"{results['steps']} steps, {finite_text(results['losses_finite'])}; best weights: "
            f"{psnr_text(results['final_psnr'], results['final_baseline_psnr'])}; {memory_text(results['peak_gpu_mib'])}"
        )
        return self.finished(outcome, passed, results, headline, reason=None if results["zero_shards"] else "no ZeRO checkpoint")

    # -- the whole --

    def unmet_need(self, name: str) -> str | None:
        """Why `name` cannot run for want of an earlier step, or None."""
        needed = NEEDS.get(name)
        if needed is None:
            return None
        if name == "compile":  # a bench stopped early still has a best setting among its rows
            return None if best_setting(self.step(needed).get("results", {})) else "needs a measured cvae_dist row from the bench step"
        return None if self.step(needed).get("status") == "ok" else f"needs the {needed} step, which did not pass"

    def next_steps(self, name: str) -> list[str]:
        """What to run after `name` failed or timed out: the check for it alone, and its own commands."""
        again = [f"benchmarks/gpu_check.sh {shlex.quote(str(self.out))}-{name} --steps {name}"]
        if self.plan.device == "cpu":
            again.append("--dry-run")
        gpu = self.environment.get("gpu")
        if self.peak_tflops and self.peak_tflops != (gpu and peak_tflops(gpu["name"])):
            again += ["--peak_tflops", f"{self.peak_tflops:g}"]
        added = [s for s in with_needs([name]) if s not in (ALWAYS, name)]
        lines = [f"`{' '.join(again)}` reruns it alone" + (f" (after {', '.join(added)}, which it needs)" if added else "")]
        work = {"data": "the data step's dataset", "train": "the train step's run"}
        held = [work[s] for s in added if s in work]
        for command in self.commands.get(name, []):
            lines.append(f"by hand{', with ' + ' and '.join(held) + ' in $WORK' if held else ''}: `{self.shown(command)}`")
        return lines

    def run_step(self, name: str) -> None:
        began = time.monotonic()
        budget = min(self.plan.budgets[name], self.started + self.plan.total_s - began)
        unmet = self.unmet_need(name)
        if name in self.plan.skip:
            record = {"status": "skipped", "reason": self.plan.skip[name]}
        elif unmet:
            record = {"status": "skipped", "reason": unmet}
        elif budget < MIN_STEP_S:
            record = {"status": "skipped", "reason": f"no time left of the check's {self.plan.total_s:.0f} s"}
        else:
            try:
                record = getattr(self, f"step_{name}")(budget)
            except Exception as err:  # noqa: BLE001 - a step's own error is its result; the next steps still run
                record = {"status": "failed", "reason": f"{type(err).__name__}: {err}", "tail": traceback.format_exc().splitlines()[-15:]}
        if name in self.commands:
            record["commands"] = [self.shown(command) for command in self.commands[name]]
        if record["status"] in ("failed", "timed out"):
            record["next"] = self.next_steps(name)
        self.steps.append({"step": name, "budget_s": round(max(budget, 0)), "seconds": round(time.monotonic() - began, 1), **record})
        self.write()
        print(f"{name}: {record['status']} in {self.steps[-1]['seconds']:.0f} s", flush=True)

    def write(self) -> None:
        report = {
            "mode": "dry run (CPU)" if self.plan.device == "cpu" else "GPU",
            "seconds": round(time.monotonic() - self.started, 1),
            "total_budget_s": self.plan.total_s,
            "steps_asked": self.asked,
            "steps_run": self.selected,
            "work": {"folder": str(self.work), "where": self.work_where},
            "environment": self.environment,
            "steps": self.steps,
        }
        (self.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        (self.out / "gpu_check.md").write_text(markdown(report))


def bench_headline(report: dict, peak: float | None) -> str:
    rows = [Row(**r) for r in report["rows"]]
    best = max(common.measured(rows, best=True, teacher_forcing=True), key=lambda r: r.frames_per_s, default=None)
    skipped = sum(bool(r.skipped) for r in rows)
    parts = [f"{len(rows)} rows" + (f" ({skipped} skipped)" if skipped else "") + ("" if report["finished"] else ", stopped early")]
    if best:
        parts.append(f"best {best.frames_per_s:,.0f} frames/s ({best.name.removeprefix('cvae_dist, ')})")
    if report["out_of_memory"]:
        parts.append(f"out of memory: {'; '.join(report['out_of_memory'])}")
    return "; ".join(parts + summary_parts(report["summary"], peak))


def summary_parts(summary: dict, peak: float | None) -> list[str]:
    """The bench summary's figures that the issue sets goals for."""
    parts = [f"full epoch {summary[f'full_epoch_seconds_tf_{tf}']:.2f} s TF {tf}" for tf in ("on", "off") if f"full_epoch_seconds_tf_{tf}" in summary]
    if "share_of_peak" in summary:
        parts.append(f"{summary['share_of_peak']:.0%} of {peak:g} TFLOP/s")
    if "best_speedup_over_course_loop" in summary:
        parts.append(f"{summary['best_speedup_over_course_loop']:.1f}x the course loop")
    return parts


# Worth measuring on a GPU with time left after the check; outside it, as it would not fit its 7 minutes.
AFTER_THE_CHECK = (
    "`python benchmarks/bench.py --device cuda --sections kernels --compile`: the kernels and the host's launches of one step, "
    "eager, compiled whole and by region, and as CUDA graphs (`--compile_mode reduce-overhead`), TF on and off (six compiles)"
)


def markdown(report: dict) -> str:
    steps = {s["step"]: s for s in report["steps"]}
    rows = []
    for step in report["steps"]:
        result = step.get("headline") or step.get("reason", "")
        if step["status"] != "ok" and step.get("headline"):
            result += f" ({step['reason']})"
        rows.append([step["step"], step["status"], f"{step['seconds']:.0f}", str(step["budget_s"]), result])
    lines = [f"# cvae_dist GPU check: {report['mode']}", ""]
    subset = ""
    if report.get("steps_asked") is not None:
        added = [s for s in report["steps_run"] if s not in report["steps_asked"]]
        subset = f" (--steps {','.join(report['steps_asked'])}" + (f"; {', '.join(added)} added: needed" if added else "") + ")"
    lines += [f"{len(report['steps'])} of {len(STEPS)} steps{subset} in {report['seconds']:.0f} s (budget {report['total_budget_s']:.0f} s)."]
    if report.get("work", {}).get("where"):
        lines += [f"Datasets and runs in {report['work']['where']}."]
    lines += [""]
    lines += [common.markdown_table(["step", "status", "seconds", "budget", "result"], rows, "llrrl")]
    reports = [steps[name]["results"] for name in ("bench", "compile") if steps.get(name, {}).get("results", {}).get("rows")]
    if reports:
        commands = " and ".join(f"`{results['command']}`" for results in reports)
        bench_rows = [Row(**r) for results in reports for r in results["rows"]]
        lines += ["", f"Bench ({commands}):", "", "```", table(bench_rows, reports[-1]["summary"]), "```"]
    for step in report["steps"]:
        if step.get("tail"):
            lines += ["", f"Last lines of {step['step']} ({step.get('log', 'traceback')}):", "", "```", *step["tail"], "```"]
    lines += ["", f"With time left on the GPU: {AFTER_THE_CHECK}."]
    failed = [step for step in report["steps"] if step.get("next")]
    if failed:
        lines += ["", "What to run next (`$WORK`: a scratch folder, e.g. `WORK=$(mktemp -d -p /dev/shm)`):", ""]
        lines += [f"- {step['step']} ({step['status']}): " + "; ".join(step["next"]) for step in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    doc = __doc__.split("\n\n", 2)
    parser = argparse.ArgumentParser(
        description=doc[0],
        epilog=doc[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=doc[1].strip().replace("benchmarks/gpu_check.sh", "%(prog)s"),
    )
    parser.add_argument("out", type=Path, help=f"folder for gpu_check.json, gpu_check.md and {LOG} (made if missing)")
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU with the tiny preset and tiny data (a few minutes)")
    peaks = ", ".join(f"{k} {v:g}" for k, v in PEAK_BF16_TFLOPS if v)
    parser.add_argument("--peak_tflops", type=float, help=f"the GPU's dense bf16 peak in TFLOP/s (default: from its name, {peaks})")
    parser.add_argument(
        "--steps",
        type=step_names,
        help=f"comma-separated steps to run, of {','.join(STEPS)} (default: all); the steps they need and {ALWAYS} are added",
    )
    args = parser.parse_args(argv)
    check = run_check(DRY_RUN if args.dry_run else GPU, args.out, args.peak_tflops, args.steps)
    return 0 if all(s["status"] in ("ok", "skipped") for s in check.steps) else 1


def step_names(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    if not names or set(names) - set(STEPS):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(STEPS)}, got {text!r}")
    return [name for name in STEPS if name in names]


def run_check(plan: Plan, out: Path, peak: float | None = None, asked: list[str] | None = None) -> Check:
    """The check of `plan` (the steps `asked` and those they need, or all), its report written into
    `out` and printed at the end."""
    selected = with_needs(asked) if asked is not None else list(STEPS)
    if asked is not None and selected != asked:
        print(f"steps: {', '.join(selected)} ({', '.join(s for s in selected if s not in asked)} added: needed)", flush=True)
    parent, where = work_parent(out, plan.work_bytes)
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=parent, ignore_cleanup_errors=True) as work:
        check = Check(plan, out, Path(work), peak, selected=selected, asked=asked, work_where=where)
        for name in selected:
            check.run_step(name)
    print("\n" + (out / "gpu_check.md").read_text(), end="", flush=True)
    print(f"\nreport: {out / 'gpu_check.md'}, with {out / 'gpu_check.json'} and {out / LOG}", flush=True)
    return check


if __name__ == "__main__":
    raise SystemExit(main())

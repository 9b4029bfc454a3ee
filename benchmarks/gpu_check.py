"""One GPU acceptance run of cvae_dist: every GPU path measured in one call of under 8 minutes.

    benchmarks/gpu_check.sh OUT [--dry-run] [--peak_tflops P]

The steps run in order, each in its own processes under a time budget. A step that fails, or
overruns and is stopped, is recorded with the last lines of its output, and the next step runs:

  environment  GPU, memory, torch/CUDA/accelerate versions, bf16 support, which optional packages import
  data         the synthetic dataset of the training steps (python -m cvae_dist.data.synthetic)
  bench        benchmarks/bench.py --sections train: the course's loop against cvae_dist, fp32 and
               bf16, batch sizes up to the largest that fits
  train        accelerate launch --config_file accelerate_configs/rtx.yaml cvae_dist/train.py, lab
               preset, bf16; stopped by SIGTERM (the preemption path) a fixed time after training starts
  resume       the same run resumed from that checkpoint for two more epochs, then its final evaluation
  fp16         mixed precision fp16 (loss scaling) for one short epoch: every logged loss finite
  deepspeed    accelerate_configs/deepspeed_zero2.yaml on one process for one short epoch, when
               deepspeed imports ("not installed" otherwise)
  compile      the bench's best setting under torch.compile, last and with a budget of its own, so
               that a slow first compile costs no other step its time

What each step reports is read from the runs' TensorBoard events (cvae_dist.events), their
checkpoints' manifests and the bench's JSON, never from their printed output.

Writes three files into OUT: gpu_check.json (everything), gpu_check.md (its tables go into
docs/benchmarks.md) and gpu_check.log (every step's output, each cut to its first and last
lines past 1 MiB); the report is rewritten after every step. Datasets and runs go to a temporary
folder. Exit status 0 when every step passed or was skipped for a stated reason, else 1.

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
STOP_RESERVE_S = 20  # what the trainer may need after SIGTERM: finish its step, save the checkpoint
MIN_STEP_S = 5
LOG = "gpu_check.log"
LOG_PER_STEP = MiB  # eight steps' output stays far below the 16 MiB a file of the bundle may have


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
    skip: dict[str, str] = field(default_factory=dict)
    """Steps not run, and why."""

    @property
    def frames_per_step(self) -> int:
        """Predicted frames per optimizer step of the train step: batch x (window - 1)."""
        return int(self.run[self.run.index("--batch_size") + 1]) * (int(self.run[self.run.index("--train_vi_len") + 1]) - 1)


GPU = Plan(
    device="cuda",
    # 6,400 frames (400 windows of 16) render in seconds on 16 cores, at twice the model's size as in the bench.
    data="--train-frames 6400 --height 64 --width 128".split(),
    # The demo's recipe (autoregressive from the start, beta fixed at 1) on the lab network; a
    # validation rollout of 630 frames every 10 epochs of 12 steps, so that it costs a few percent.
    run=(
        "--preset lab --train_vi_len 16 --batch_size 32 --tfr 0 --kl_anneal_type Without --lr_milestones "
        "--log_every 10 --eval_every 10 --per_save 10 --checkpoints_total_limit 2"
    ).split(),
    short="--partial 0.5 --batch_size 16 --log_every 1 --val_vi_len 64".split(),
    rtx_launch=[],
    bench="--device cuda --sections train --batches 2,16,64,128,256 --repeats 5".split(),
    compile="--device cuda --sections compile --repeats 5".split(),
    train_seconds=160,
    env={},
    budgets={"environment": 30, "data": 30, "bench": 75, "train": 190, "resume": 40, "fp16": 35, "deepspeed": 45, "compile": 90},
    # Under 8 minutes with the 10 s grace a step stopped at its budget may take; the compile step,
    # last, gets what the others leave of it.
    total_s=460,
)

DRY_RUN = Plan(
    device="cpu",
    data="--train-frames 64 --height 32 --width 64".split(),
    run=(
        "--preset tiny --train_vi_len 4 --val_vi_len 8 --batch_size 2 --tfr 0 --kl_anneal_type Without --lr_milestones "
        "--log_every 1 --eval_every 1 --per_save 1 --checkpoints_total_limit 2 --bn_recalibration_windows 4"
    ).split(),
    short=["--partial", "0.25"],
    # bf16 on a CPU is many times slower than fp32 for the tiny network; --cpu keeps a dry run off a GPU.
    rtx_launch=["--cpu", "--mixed_precision", "no"],
    # Batch 64 is more than the quick data's 32 windows: the bench lists it as skipped and goes on.
    bench="--device cpu --quick --sections train --batches 2,64 --precisions fp32 --repeats 1".split(),
    compile="--device cpu --quick --sections compile --repeats 1 --compile_backend eager".split(),
    train_seconds=8,
    # The CPU only; one thread per process, since torch's default of a thread per core makes
    # processes that share a small machine wait on each other's threads many times over.
    env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    # Generous: the suite runs it on 2 cores that other work shares.
    budgets={"environment": 60, "data": 90, "bench": 180, "train": 120, "resume": 120, "fp16": 120, "deepspeed": 0, "compile": 180},
    total_s=780,
    skip={
        "deepspeed": "dry run: DeepSpeed on a CPU first compiles its shared-memory op with g++ (minutes on 2 cores); "
        "tests/test_deepspeed.py runs ZeRO on a CPU"
    },
)


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

    def __post_init__(self):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / LOG).write_text("")

    # -- plumbing --

    def run(self, name: str, command: list[str], budget: float, watch: StopTraining | None = None) -> common.Outcome:
        """`command` with its output appended to the log, stopped at `budget` seconds."""
        # Unbuffered: the log is what a stopped step leaves.
        env = common.repo_env(PYTHONUNBUFFERED="1", **self.plan.env)
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

    @staticmethod
    def finished(outcome: common.Outcome, passed: bool, results: dict, headline: str, reason: str | None = None) -> dict:
        status = "timed out" if outcome.returncode is None else "ok" if passed else "failed"
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

    def run_bench(self, name: str, flags: list[str], budget: float) -> tuple[common.Outcome, dict]:
        """benchmarks/bench.py with these flags; its JSON report ({} where it wrote none)."""
        path = self.work / f"{name}.json"
        peak = ["--peak_tflops", str(self.peak_tflops)] if self.peak_tflops else []
        command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), *flags, *peak, "--data", str(self.work / "bench-data"), "--json", str(path)]
        outcome = self.run(name, command, budget)
        return outcome, json.loads(path.read_text()) if path.is_file() else {}

    def step_bench(self, budget: float) -> dict:
        outcome, report = self.run_bench("bench", self.plan.bench, budget)
        if not report:
            return self.finished(outcome, False, {}, "no rows")
        return self.finished(outcome, outcome.returncode == 0 and report["finished"], report, bench_headline(report, self.peak_tflops))

    def step_compile(self, budget: float) -> dict:
        eager = self.step("bench")["results"]
        best = next(Row(**r) for r in eager["rows"] if r["notes"].get("best") and r["notes"]["teacher_forcing"])
        setting = ["--batches", str(best.notes["batch"]), "--precisions", common.precision_name(best.notes["precision"])]
        outcome, report = self.run_bench("compile", [*self.plan.compile, *setting], budget)
        if not report.get("rows"):
            return self.finished(outcome, False, report, "no rows")
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

    def run_step(self, name: str) -> None:
        began = time.monotonic()
        budget = min(self.plan.budgets[name], self.started + self.plan.total_s - began)
        needed = NEEDS.get(name)
        if name in self.plan.skip:
            record = {"status": "skipped", "reason": self.plan.skip[name]}
        elif needed and self.step(needed).get("status") != "ok":
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

    def write(self) -> None:
        report = {
            "mode": "dry run (CPU)" if self.plan.device == "cpu" else "GPU",
            "seconds": round(time.monotonic() - self.started, 1),
            "total_budget_s": self.plan.total_s,
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


def markdown(report: dict) -> str:
    steps = {s["step"]: s for s in report["steps"]}
    rows = []
    for step in report["steps"]:
        result = step.get("headline") or step.get("reason", "")
        if step["status"] != "ok" and step.get("headline"):
            result += f" ({step['reason']})"
        rows.append([step["step"], step["status"], f"{step['seconds']:.0f}", str(step["budget_s"]), result])
    lines = [f"# cvae_dist GPU check: {report['mode']}", ""]
    lines += [f"{len(report['steps'])} of {len(STEPS)} steps in {report['seconds']:.0f} s (budget {report['total_budget_s']:.0f} s).", ""]
    lines += [common.markdown_table(["step", "status", "seconds", "budget", "result"], rows, "llrrl")]
    reports = [steps[name]["results"] for name in ("bench", "compile") if steps.get(name, {}).get("results", {}).get("rows")]
    if reports:
        commands = " and ".join(f"`{results['command']}`" for results in reports)
        bench_rows = [Row(**r) for results in reports for r in results["rows"]]
        lines += ["", f"Bench ({commands}):", "", "```", table(bench_rows, reports[-1]["summary"]), "```"]
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
    parser.add_argument("out", type=Path, help=f"folder for gpu_check.json, gpu_check.md and {LOG} (made if missing)")
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU with the tiny preset and tiny data (a few minutes)")
    peaks = ", ".join(f"{k} {v:g}" for k, v in PEAK_BF16_TFLOPS if v)
    parser.add_argument("--peak_tflops", type=float, help=f"the GPU's dense bf16 peak in TFLOP/s (default: from its name, {peaks})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        check = Check(DRY_RUN if args.dry_run else GPU, args.out, Path(work), args.peak_tflops)
        for name in STEPS:
            check.run_step(name)
    print(f"report: {args.out / 'gpu_check.md'}")
    return 0 if all(s["status"] in ("ok", "skipped") for s in check.steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())

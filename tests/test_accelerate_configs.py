"""The shipped accelerate_configs/: each parses with Accelerate's own loader into the setup it
promises, and each that can run without a GPU trains cvae_dist/train.py through `accelerate launch`.

Where each runs: cpu.yaml in test_distributed.py (the one-process reference), deepspeed_zero2.yaml
in test_deepspeed.py, multi_node.yaml in test_slurm.py (slurm/multinode.sh), multi_gpu.yaml (through
launch/multi_gpu.sh) and deepspeed_zero3.yaml here; rtx.yaml only where there is a GPU.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file

from cvae_dist.checkpoint import load_model
from cvae_dist.config import PRESETS
from cvae_dist.training.precision import NATIVE_BF16, choose_mixed_precision
from support import REPO, TINY_RUN, free_port, run_env

CONFIGS = REPO / "accelerate_configs"
RUN = [*TINY_RUN, "--num_epoch", "1", "--val_vi_len", "8"]

EXPECTED = {
    "rtx.yaml": {"distributed_type": "NO", "num_processes": 1, "mixed_precision": "bf16", "use_cpu": False},
    "multi_gpu.yaml": {"distributed_type": "MULTI_GPU", "num_machines": 1, "mixed_precision": "bf16"},
    "multi_node.yaml": {"distributed_type": "MULTI_GPU", "rdzv_backend": "c10d", "same_network": False, "mixed_precision": "bf16"},
    "deepspeed_zero2.yaml": {"distributed_type": "DEEPSPEED", "mixed_precision": "bf16", "zero_stage": 2},
    "deepspeed_zero3.yaml": {"distributed_type": "DEEPSPEED", "mixed_precision": "bf16", "zero_stage": 3},
    "cpu.yaml": {"distributed_type": "NO", "num_processes": 1, "mixed_precision": "no", "use_cpu": True},
}


def test_every_shipped_config_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerates_loader(name):
    config = load_config_from_file(str(CONFIGS / name))
    for key, value in EXPECTED[name].items():
        if key == "zero_stage":
            assert config.deepspeed_config["zero_stage"] == value
        else:
            actual = getattr(config, key)
            assert (actual.value if hasattr(actual, "value") else actual) == value, key


def launch_with_config(launch, config: str, processes: int, save_root: Path, dataset_root: Path, precision: str = "no"):
    extra = [
        "--config_file",
        str(CONFIGS / config),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        precision,
    ]
    result = launch(["--DR", str(dataset_root), "--save_root", str(save_root), *RUN], cwd=save_root.parent, extra=extra, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def launch_script(script: str, dataset_root: Path, runs: Path, **env: str) -> subprocess.CompletedProcess:
    """A launch/ script as a user runs it, with the Python environment's `accelerate` first on PATH (run_env)."""
    environment = run_env()
    environment.update(RUNS=str(runs), RUN_NAME="run", **env)
    flags = ["--DR", str(dataset_root), *RUN, "--mixed_precision", "no"]
    result = subprocess.run([str(REPO / "launch" / script), *flags], cwd=runs.parent, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"tensorboard --logdir {runs}" in result.stdout
    return result


@pytest.mark.slow
def test_multi_gpu_script_and_config_run_two_gloo_processes_without_a_gpu(dataset_root, tmp_path):
    result = launch_script("multi_gpu.sh", dataset_root, tmp_path / "runs", NUM_GPUS="2")
    assert "world size 2 (MULTI_CPU" in result.stdout
    # The tiny flags given to the script won over its own: batches of 2 windows on 2 processes.
    assert [p.name for p in (tmp_path / "runs" / "run" / "checkpoints").iterdir()] == ["checkpoint-4"]
    assert "preset: tiny" in (tmp_path / "runs" / "run" / "config.yaml").read_text()


def test_single_gpu_script_reaches_train_py_with_the_rtx_config(tmp_path):
    # rtx.yaml needs a card to train; `--help` still travels the whole way through accelerate launch.
    environment = run_env()
    environment.update(RUNS=str(tmp_path / "runs"))
    result = subprocess.run(
        [str(REPO / "launch" / "single_gpu.sh"), "--help"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training on 1 GPU(s)" in result.stdout and f"tensorboard --logdir {tmp_path / 'runs'}" in result.stdout
    assert "usage: cvae_dist/train.py" in result.stdout


@pytest.mark.slow
def test_zero3_config_trains_and_saves_whole_weights(launch, dataset_root, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is in the `deepspeed` extra (scripts/setup.sh dev installs it)")
    # Two processes: ZeRO-3 on one process is pointless, and DeepSpeed 0.19 then saves the
    # buffers without the parameters.
    result = launch_with_config(launch, "deepspeed_zero3.yaml", 2, tmp_path / "run", dataset_root)
    assert "world size 2 (DEEPSPEED" in result.stdout
    # ZeRO-3 partitions the parameters; the saved weights are gathered whole and load strictly.
    model, config = load_model(tmp_path / "run" / "checkpoints" / "checkpoint-4")
    assert config.model.F_dim == PRESETS["tiny"]["F_dim"]
    assert sum(p.numel() for p in model.parameters()) > 10_000


def test_rtx_config_trains_an_rtx_20xx_in_fp16_and_later_cards_in_its_bf16():
    launched = load_config_from_file(str(CONFIGS / "rtx.yaml")).mixed_precision
    precision, note = choose_mixed_precision(None, launched, "cuda", (7, 5))  # RTX 20xx (Turing)
    assert precision == "fp16" and "bf16 needs compute capability 8.0 (Ampere) and this GPU has 7.5" in note
    for capability in [(8, 6), (8, 9), (12, 0)]:  # RTX 30xx, 40xx, 50xx
        # None: the Accelerator takes the config's bf16 from the launcher, as it always did.
        assert choose_mixed_precision(None, launched, "cuda", capability) == (None, None)
    # A precision given to train.py itself wins over the config's, as before.
    assert choose_mixed_precision("bf16", launched, "cuda", (7, 5))[0] == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="rtx.yaml is for one NVIDIA card; there is none here")
def test_rtx_config_trains_on_the_gpu(launch, dataset_root, tmp_path):
    result = launch_with_config(launch, "rtx.yaml", 1, tmp_path / "run", dataset_root, precision="bf16")
    expected = "fp16" if torch.cuda.get_device_capability() < NATIVE_BF16 else "bf16"
    assert f"world size 1 (NO, cuda, mixed precision {expected}, TF32 on, cuDNN benchmark on)" in result.stdout


def test_cpu_threads_note_names_the_flag_only_when_cores_would_idle():
    from cvae_dist.training.precision import cpu_threads_note

    note = cpu_threads_note(threads=1, cores_per_process=8)
    assert "1 CPU thread(s)" in note and "--num_cpu_threads_per_process 8" in note
    assert cpu_threads_note(threads=8, cores_per_process=8) is None
    assert cpu_threads_note(threads=4, cores_per_process=2) is None


def test_make_demo_gives_torch_every_core():
    """accelerate launch sets OMP_NUM_THREADS=1 unless told otherwise: the demo must tell it."""
    dry_run = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    launch = next(line for line in dry_run.splitlines() if "accelerate launch" in line).split()
    threads = launch[launch.index("--num_cpu_threads_per_process") + 1]
    assert int(threads) == os.cpu_count() or int(threads) == len(os.sched_getaffinity(0))

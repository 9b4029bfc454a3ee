"""Data parallelism changes nothing but speed (with --freeze_batchnorm): two gloo ranks (real torchrun
processes) and gradient accumulation end with the weights of one process on the doubled batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from support import REPO, TINY_RUN, free_port, run_env

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# One epoch of 16 windows = 8 optimizer steps of 2 windows. BatchNorm normalises with running
# statistics, so its output does not depend on how a batch is split. A teacher-forcing coin per
# optimizer step at ratio 0.5 (seed 0: 4 of the 8 steps) must be the same for every share of a step.
RUN = [*TINY_RUN, "--num_epoch", "1", "--val_vi_len", "8", "--freeze_batchnorm", "--tfr", "0.5", "--tfr_coin", "batch"]
# Splitting a batch sums its gradients in another order; Adam divides each gradient by its running
# RMS, so that rounding grows to a weight difference of 1.3e-5 after these 8 steps (measured, both
# tests). A real mismatch is far larger: the same run with the coin drawn once per epoch instead of
# per step ends 9.8e-3 away from the reference.
TOLERANCE = 1e-4


def final_weights(save_root: Path) -> dict:
    return load_file(save_root / "checkpoints" / "checkpoint-8" / "model.safetensors")


def max_abs_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def doubled_batch(launch, dataset_root, tmp_path_factory):
    """The reference: one process, batch 2, launched with the shipped CPU config."""
    save_root = tmp_path_factory.mktemp("ddp") / "one-rank"
    result = launch(
        ["--DR", str(dataset_root), "--save_root", str(save_root), *RUN],
        cwd=save_root.parent,
        extra=["--config_file", str(REPO / "accelerate_configs" / "cpu.yaml")],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 1" in result.stdout
    return final_weights(save_root)


def test_two_gloo_ranks_equal_one_rank_on_the_doubled_batch(doubled_batch, dataset_root, tmp_path):
    save_root = tmp_path / "two-ranks"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(REPO / "cvae_dist" / "train.py"),
        "--DR",
        str(dataset_root),
        "--save_root",
        str(save_root),
        *RUN,
        "--batch_size",
        "1",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2 (MULTI_CPU" in result.stdout
    error = max_abs_difference(final_weights(save_root), doubled_batch)
    print(f"2 gloo ranks x batch 1 vs 1 rank x batch 2: max abs weight difference {error:.2e}")
    assert error < TOLERANCE


def test_accumulating_two_batches_equals_the_doubled_batch(launch, doubled_batch, dataset_root, tmp_path):
    save_root = tmp_path / "accumulated"
    args = ["--DR", str(dataset_root), "--save_root", str(save_root), *RUN, "--batch_size", "1", "--gradient_accumulation_steps", "2"]
    result = launch(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    error = max_abs_difference(final_weights(save_root), doubled_batch)
    print(f"batch 1 x accumulation 2 vs batch 2: max abs weight difference {error:.2e}")
    assert error < TOLERANCE

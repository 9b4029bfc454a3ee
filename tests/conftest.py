"""Shared fixtures: a small synthetic dataset in the course layout, made once per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvae_dist.data.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: a thread pool each would make them fight over the cores.
    torch.set_num_threads(1)

# Small enough for seconds of CPU, big enough for several windows of 8 frames per epoch.
SMALL_DATASET = dict(train_frames=128, clip_frames=64, val_frames=64, test_frames=40, test_sequences=2, height=64, width=128, progress=False)

# Flags that make a training run take seconds on a CPU: sizes only, so that the loader runs with the
# default workers that users get.
TINY_RUN = [
    "--preset",
    "tiny",
    "--train_vi_len",
    "8",
    "--val_vi_len",
    "16",
    "--batch_size",
    "2",
    "--lr_milestones",
    "--log_every",
    "1",
]


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("dataset") / "synthetic", workers=1, **SMALL_DATASET)


def run_env() -> dict[str, str]:
    """Environment for subprocesses: the repository importable, one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def accelerate_launch(args: list[str], cwd: Path, timeout: int = 300, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch cvae_dist/train.py ARGS` as a user would type it, on one CPU process."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *(extra or []),
        str(REPO / "cvae_dist" / "train.py"),
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(dataset_root, tmp_path_factory) -> Path:
    """A finished two-epoch run: teacher forcing in epoch 1 only, beta annealed per epoch, 8 steps an epoch."""
    save_root = tmp_path_factory.mktemp("tiny_run") / "teacher_forced_then_free"
    args = [
        "--DR",
        str(dataset_root),
        "--save_root",
        str(save_root),
        *TINY_RUN,
        "--num_epoch",
        "2",
        "--per_save",
        "1",
        "--tfr",
        "1",
        "--tfr_sde",
        "1",
        "--tfr_d_step",
        "1",
        "--kl_anneal_type",
        "Monotonic",
    ]
    result = accelerate_launch(args, cwd=save_root.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return save_root


def free_port() -> int:
    """A TCP port nobody listens on now, so that concurrent multi-process tests never share a rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

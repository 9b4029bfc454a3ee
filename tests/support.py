"""Constants and plain functions the tests share; fixtures (datasets, a finished run, a Slurm,
the launcher) live in conftest.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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


def run_env() -> dict[str, str]:
    """Environment for subprocesses: the repository importable, one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port() -> int:
    """A TCP port nobody listens on now, so that concurrent multi-process tests never share a rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_args(dataset_root: Path, save_root: Path, *extra: str) -> list[str]:
    """Training flags of a seconds-long run of `dataset_root` into `save_root`: TINY_RUN, then `extra`."""
    return ["--DR", str(dataset_root), "--save_root", str(save_root), *TINY_RUN, *extra]
